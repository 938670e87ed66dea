// Recovery from a lost token for long-running processes. When the token is pulled out, the
// HSM restarts or the sessions die, the token state is rebuilt with a fresh module context
// and a new login, while worker threads go on using it.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "token/token.h"

namespace p11smime {

// Returns true for the CKR_ values that mean the token is gone, or the state kept for it:
// its sessions, its login or the handles of its objects. They are CKR_DEVICE_REMOVED,
// CKR_DEVICE_ERROR, CKR_TOKEN_NOT_PRESENT, CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
// CKR_USER_NOT_LOGGED_IN, CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID and
// CKR_CRYPTOKI_NOT_INITIALIZED. A module that closes the sessions of a pulled token also
// ends their login, so a call in flight may fail with any of them.
bool is_token_lost(unsigned long rv);

// Returns the last CKR_ value that libp11 queued among OpenSSL's packed error codes, or
// nothing when it queued none.
std::optional<unsigned long> pkcs11_return_value(const std::vector<unsigned long> &error_codes);

// Returns why error shows a lost token, for TokenRecovery::Handlers::lost_reason: the name
// of the CKR_ value it carries when is_token_lost() is true for it, or that it is a
// TokenLostError. Returns nothing otherwise.
std::optional<std::string> token_lost_reason(const Error &error);

// Returns the CKR_ value that error carries: the rv() of a Pkcs11Error, or the last value
// libp11 queued on OpenSSL's error queue during the operation an OpensslError reports.
// Returns nothing when error carries none.
std::optional<unsigned long> pkcs11_return_value(const Error &error);

// Error raised when a token fails a test operation after an operation failed without a cause,
// as when OpenSSL clears the error of a failed decryption on purpose.
class TokenLostError : public Error {
  public:
    using Error::Error;
};

struct RecoveryOptions {
    // Reopen attempts allowed within one run() call. After the last, run() throws. With 0,
    // run() never reopens and rethrows the operation's error as it is.
    int max_attempts = 8;

    // Wait before the first reopen attempt, doubled after each attempt up to max_delay.
    std::chrono::milliseconds first_delay{100};
    std::chrono::milliseconds max_delay{5000};

    // Times one run() call runs its operation again after a loss. When the operation loses
    // the token once more, run() rethrows its error and so does every later run() call,
    // because reopening does not cure that fault.
    int max_retries = 2;

    // Maximum time for the token to come back in one recovery, reopen attempts included. The
    // last attempt falls on the limit. Unset means no limit.
    std::optional<std::chrono::milliseconds> max_wait;

    // Receives one line per lost token, failed reopen attempt and recovery, for the process
    // log. The lines name the token and why it was found lost, never the PIN.
    std::function<void(const std::string &line)> log;
};

// Runs operations on token state that worker threads share, and rebuilds that state when the
// token is lost. libp11 0.4.12 keeps dead session handles in its pool and crashes when it
// re-enumerates more than one slot, so a lost token is never repaired in place. close() must
// free every key and the libp11 context, which unloads the module. open() then loads the
// module afresh and logs in again with the PIN read again from its source.
//
// Operations run under a shared lock, close() and open() under an exclusive one, so no thread
// uses a key while it is freed. When several threads see the same loss, one reopens and the
// others run again on the new state. When reopening fails for good, every later run() throws
// that error at once instead of waiting again.
class TokenRecovery {
  public:
    struct Handlers {
        // Returns why the token is lost when the operation threw error, such as the name of
        // a CKR_ value, or nothing when the failure was the operation's own. Runs under the
        // shared lock, so it may probe the token.
        std::function<std::optional<std::string>(const Error &error)> lost_reason;

        // Frees the token state. Must not throw.
        std::function<void()> close;

        // Builds the token state again, and throws when it cannot. TokenNotFoundError, or an
        // error carrying a CKR_ value of a lost token, makes recovery wait and try again.
        std::function<void()> open;
    };

    // token_name describes the token at the start of log lines and errors, such as "the
    // token of key 'pkcs11:...'".
    TokenRecovery(std::string token_name, RecoveryOptions options, Handlers handlers);

    // Runs operation. When it throws Error and the token is lost, closes and reopens the
    // state with backoff and runs operation again. Rethrows operation's error when the token
    // is not lost, or is lost again after max_retries reopens. Throws the last reopen error
    // when the attempts or the wait run out, or when the reopen fails for another reason,
    // such as a rejected PIN. operation must leave nothing behind when it throws, because it
    // may run again.
    void run(const std::function<void()> &operation);

    // Number of times the state was reopened since construction.
    unsigned long recoveries() const { return recoveries_; }

  private:
    void recover(unsigned long generation, const std::string &reason, const std::string &cause,
                 int &attempts_left);
    [[noreturn]] void give_up(std::exception_ptr error);
    void reopen(int &attempts_left);
    void log(const std::string &line) const;

    std::string token_name_;
    RecoveryOptions options_;
    Handlers handlers_;
    std::shared_mutex mutex_;
    unsigned long generation_ = 0; // incremented by each close(), under the exclusive lock
    std::exception_ptr failure_;   // the error that ended recovery for good
    std::atomic<unsigned long> recoveries_{0};
};

// A token key that survives the loss of its token, for batch signing. Thread-safe: any
// number of threads may call run() at once.
class RecoveringTokenKey {
  public:
    // Opens the key as open_token_key() does, and throws what it throws.
    RecoveringTokenKey(Pkcs11Uri key_uri, std::optional<Pkcs11Uri> certificate_uri,
                       TokenOptions token, RecoveryOptions recovery = {},
                       bool certificate_on_token = true);

    // Runs operation with the open key, and recovers as TokenRecovery::run() does. The
    // token is lost when the error carries the CKR_ value of a lost token, when it is a
    // TokenLostError, or when a probe() after the error fails that way.
    void run(const std::function<void(const TokenKey &key)> &operation);

    // The key's certificate, as first opened; the reopened key has the same one.
    X509 *certificate() const { return certificate_.get(); }

    unsigned long recoveries() const { return recovery_.recoveries(); }

  private:
    std::optional<std::string> lost_reason(const Error &error) const;

    Pkcs11Uri key_uri_;
    std::optional<Pkcs11Uri> certificate_uri_;
    TokenOptions token_;
    bool certificate_on_token_;
    std::unique_ptr<TokenKey> key_;
    X509Ptr certificate_;
    TokenRecovery recovery_;
};

} // namespace p11smime
