// Error types shared by the token/, cms/ and cli/ layers.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace p11smime {

// Error raised for a usage, input or environment fault: a missing file, an unreadable message,
// a token that is absent or rejects the PIN. The command maps it to exit status 2. hint() is a
// suggested fix for the person at the keyboard, or empty.
class Error : public std::runtime_error {
  public:
    explicit Error(const std::string &message, std::string hint = {})
        : std::runtime_error(message), hint_(std::move(hint)) {}

    const std::string &hint() const noexcept { return hint_; }

  private:
    std::string hint_;
};

// Error raised by an OpenSSL call. The constructor drains OpenSSL's thread error queue and
// appends its reasons to the message, so a later failure never reports a stale cause.
class OpensslError : public Error {
  public:
    explicit OpensslError(const std::string &operation, std::string hint = {});

    // The packed codes (ERR_get_error) that were on the queue, oldest first. The token layer
    // reads the CKR_ value of a failed PKCS#11 call from them.
    const std::vector<unsigned long> &error_codes() const noexcept { return error_codes_; }

  private:
    struct Drained {
        std::string message;
        std::vector<unsigned long> codes;
    };
    static Drained drain(const std::string &operation);
    OpensslError(Drained drained, std::string hint);

    std::vector<unsigned long> error_codes_;
};

// Returns the reasons on OpenSSL's error queue joined by "; ", and clears the queue. Appends
// each packed error code to codes when it is given.
std::string drain_openssl_errors(std::vector<unsigned long> *codes = nullptr);

// Clears OpenSSL's error queue. Called before an operation because modules such as SoftHSM leave
// unrelated errors behind at start-up.
void clear_openssl_errors() noexcept;

} // namespace p11smime
