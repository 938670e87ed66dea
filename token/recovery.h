// Recovery from a lost token for long-running processes: a key that reopens its module, logs
// in again and retries when the token is pulled out, the HSM restarts or the sessions die.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "token/token.h"

namespace p11smime {

// Returns true for the CKR_ values that mean the token, or every session on it, is gone:
// CKR_DEVICE_REMOVED, CKR_DEVICE_ERROR, CKR_TOKEN_NOT_PRESENT, CKR_SESSION_HANDLE_INVALID
// and CKR_SESSION_CLOSED.
bool is_token_lost(unsigned long rv);

// Returns the CKR_ value that error carries: the rv() of a Pkcs11Error, or the last value
// libp11 queued on OpenSSL's error queue during the operation an OpensslError reports.
// Returns nothing when error carries none.
std::optional<unsigned long> pkcs11_return_value(const Error &error);

struct RecoveryOptions {
    // Reopen attempts allowed within one run() call; after the last, run() throws.
    int max_attempts = 8;

    // Wait before the first reopen attempt; it doubles after each failed attempt.
    std::chrono::milliseconds first_delay{100};
    std::chrono::milliseconds max_delay{5000};

    // Receives one line per lost token, failed reopen attempt and recovery, for the process
    // log. The lines name the token URI and the CKR_ value, never the PIN.
    std::function<void(const std::string &line)> log;
};

// A token key that survives the loss of its token. libp11 0.4.12 keeps dead session handles
// in its pool and crashes when it re-enumerates more than one slot, so recovery does not
// repair the old context. It frees the key, releases the slots, unloads and frees the libp11
// context, then loads the module afresh and logs in again with the PIN read again from its
// source. The interface is meant for batch signing and a mail filter daemon.
//
// Not thread-safe: one thread at a time may call run().
class RecoveringTokenKey {
  public:
    // Opens the key as open_token_key() does, and throws what it throws.
    RecoveringTokenKey(Pkcs11Uri key_uri, std::optional<Pkcs11Uri> certificate_uri,
                       TokenOptions token, RecoveryOptions recovery = {});

    // Runs operation with the open key. When operation throws Error and the token is lost
    // (the error carries a CKR_ value for which is_token_lost() is true, or a probe() of the
    // token fails that way), reopens the key with backoff and runs operation again. Rethrows
    // operation's error when the token is not lost. Throws the last reopen error when the
    // attempts run out or the reopen fails for another reason, such as a rejected PIN, which
    // is never retried.
    void run(const std::function<void(const TokenKey &key)> &operation);

    const TokenKey &key() const { return *key_; }

    // Number of times the key was reopened since construction.
    unsigned long recoveries() const { return recoveries_; }

  private:
    // Returns the CKR_ value showing that the token is lost, or nothing when it is not.
    std::optional<unsigned long> lost_code(const Error &error) const;
    void reopen(int &attempts_left);

    Pkcs11Uri key_uri_;
    std::optional<Pkcs11Uri> certificate_uri_;
    TokenOptions token_;
    RecoveryOptions recovery_;
    std::unique_ptr<TokenKey> key_;
    unsigned long recoveries_ = 0;
};

} // namespace p11smime
