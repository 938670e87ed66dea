#include "token/recovery.h"

#include <thread>

#include <openssl/err.h>
#include <p11-kit/pkcs11.h>

#include "token/context.h"

namespace p11smime {

bool is_token_lost(unsigned long rv) {
    return rv == CKR_DEVICE_REMOVED || rv == CKR_DEVICE_ERROR || rv == CKR_TOKEN_NOT_PRESENT ||
           rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED;
}

std::optional<unsigned long> pkcs11_return_value(const Error &error) {
    if (const auto *pkcs11 = dynamic_cast<const Pkcs11Error *>(&error))
        return pkcs11->rv();
    const auto *openssl = dynamic_cast<const OpensslError *>(&error);
    if (!openssl)
        return std::nullopt;

    // libp11 queues a CKR_ value as the reason of an error in a library whose number it
    // registers at run time, which happens once a key was opened.
    int library = ERR_get_CKR_code();
    std::optional<unsigned long> rv;
    for (unsigned long code : openssl->error_codes())
        if (ERR_GET_LIB(code) == library)
            rv = ERR_GET_REASON(code);
    return rv;
}

RecoveringTokenKey::RecoveringTokenKey(Pkcs11Uri key_uri,
                                       std::optional<Pkcs11Uri> certificate_uri,
                                       TokenOptions token, RecoveryOptions recovery)
    : key_uri_(std::move(key_uri)), certificate_uri_(std::move(certificate_uri)),
      token_(std::move(token)), recovery_(std::move(recovery)),
      key_(std::make_unique<TokenKey>(open_token_key(key_uri_, certificate_uri_, token_))) {}

std::optional<unsigned long> RecoveringTokenKey::lost_code(const Error &error) const {
    std::optional<unsigned long> rv = pkcs11_return_value(error);
    if (rv && is_token_lost(*rv))
        return rv;
    if (unsigned long probed = key_->probe(); is_token_lost(probed))
        return probed;
    return std::nullopt;
}

void RecoveringTokenKey::run(const std::function<void(const TokenKey &key)> &operation) {
    int attempts_left = recovery_.max_attempts;
    while (true) {
        try {
            if (!key_)
                reopen(attempts_left);
            operation(*key_);
            return;
        } catch (const Error &error) {
            std::optional<unsigned long> rv = key_ ? lost_code(error) : std::nullopt;
            if (!rv)
                throw;
            if (recovery_.log)
                recovery_.log("token of '" + key_uri_.to_string() + "' lost (" + ckr_name(*rv) +
                              "): " + error.what());
            key_.reset(); // frees the key, then the slots and the libp11 context
        }
    }
}

namespace {

// Returns true for the reopen failures that a token coming back can cure.
bool worth_retrying(const Error &error) {
    if (dynamic_cast<const TokenNotFoundError *>(&error))
        return true;
    std::optional<unsigned long> rv = pkcs11_return_value(error);
    return rv && is_token_lost(*rv);
}

} // namespace

void RecoveringTokenKey::reopen(int &attempts_left) {
    std::chrono::milliseconds delay = recovery_.first_delay;
    while (true) {
        if (attempts_left-- <= 0)
            throw Error("the token of '" + key_uri_.to_string() + "' did not come back after " +
                            std::to_string(recovery_.max_attempts) + " reopen attempts",
                        "check the token or HSM, then restart the process");
        std::this_thread::sleep_for(delay);
        delay = std::min(delay * 2, recovery_.max_delay);
        try {
            key_ = std::make_unique<TokenKey>(open_token_key(key_uri_, certificate_uri_, token_));
            ++recoveries_;
            if (recovery_.log)
                recovery_.log("token of '" + key_uri_.to_string() + "' reopened");
            return;
        } catch (const Error &error) {
            if (!worth_retrying(error))
                throw;
            if (recovery_.log)
                recovery_.log("reopening the token of '" + key_uri_.to_string() +
                              "' failed: " + error.what());
        }
    }
}

} // namespace p11smime
