#include "token/recovery.h"

#include <mutex>
#include <thread>

#include <openssl/err.h>
#include <p11-kit/pkcs11.h>

#include "token/context.h"

namespace p11smime {

bool is_token_lost(unsigned long rv) {
    switch (rv) {
    case CKR_DEVICE_REMOVED:
    case CKR_DEVICE_ERROR:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
        return true;
    default:
        return false;
    }
}

std::optional<unsigned long> pkcs11_return_value(const std::vector<unsigned long> &error_codes) {
    // libp11 queues a CKR_ value as the reason of an error in a library whose number it
    // registers at run time, which happens once a key was opened.
    int library = ERR_get_CKR_code();
    std::optional<unsigned long> rv;
    for (unsigned long code : error_codes)
        if (ERR_GET_LIB(code) == library)
            rv = ERR_GET_REASON(code);
    return rv;
}

std::optional<unsigned long> pkcs11_return_value(const Error &error) {
    if (const auto *pkcs11 = dynamic_cast<const Pkcs11Error *>(&error))
        return pkcs11->rv();
    if (const auto *openssl = dynamic_cast<const OpensslError *>(&error))
        return pkcs11_return_value(openssl->error_codes());
    return std::nullopt;
}

std::optional<std::string> token_lost_reason(const Error &error) {
    if (dynamic_cast<const TokenLostError *>(&error))
        return "it failed a test operation";
    std::optional<unsigned long> rv = pkcs11_return_value(error);
    if (rv && is_token_lost(*rv))
        return ckr_name(*rv);
    return std::nullopt;
}

TokenRecovery::TokenRecovery(std::string token_name, RecoveryOptions options,
                             Handlers handlers)
    : token_name_(std::move(token_name)), options_(std::move(options)),
      handlers_(std::move(handlers)) {}

void TokenRecovery::run(const std::function<void()> &operation) {
    int attempts_left = options_.max_attempts;
    int retries_left = options_.max_retries;
    while (true) {
        unsigned long generation = 0;
        std::string reason;
        std::string cause;
        std::exception_ptr uncured;
        {
            std::shared_lock lock(mutex_);
            if (failure_)
                std::rethrow_exception(failure_);
            generation = generation_;
            try {
                operation();
                return;
            } catch (const Error &error) {
                std::optional<std::string> lost =
                    options_.max_attempts > 0 ? handlers_.lost_reason(error) : std::nullopt;
                if (!lost)
                    throw;
                if (retries_left-- == 0)
                    uncured = std::current_exception();
                reason = *lost;
                cause = error.what();
            }
        }
        if (uncured)
            give_up(uncured);
        recover(generation, reason, cause, attempts_left);
    }
}

void TokenRecovery::give_up(std::exception_ptr error) {
    std::unique_lock lock(mutex_);
    if (!failure_) {
        log(token_name_ + " failed again after " + std::to_string(options_.max_retries) +
            " reopens, so recovery stops");
        failure_ = error;
    }
    std::rethrow_exception(error);
}

void TokenRecovery::recover(unsigned long generation, const std::string &reason,
                            const std::string &cause, int &attempts_left) {
    std::unique_lock lock(mutex_);
    // Another thread saw the same loss and has already reopened the state, or given up.
    if (generation != generation_ || failure_)
        return;

    log(token_name_ + " lost (" + reason + "): " + cause);
    handlers_.close();
    ++generation_;
    try {
        reopen(attempts_left);
    } catch (...) {
        failure_ = std::current_exception();
        throw;
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

std::string seconds_text(std::chrono::steady_clock::duration duration) {
    auto tenths = std::chrono::duration_cast<std::chrono::milliseconds>(duration).count() / 100;
    return std::to_string(tenths / 10) + (tenths % 10 ? "." + std::to_string(tenths % 10) : "") +
           " s";
}

} // namespace

void TokenRecovery::reopen(int &attempts_left) {
    using Clock = std::chrono::steady_clock;
    Clock::time_point start = Clock::now();
    std::optional<Clock::time_point> deadline;
    if (options_.max_wait)
        deadline = start + *options_.max_wait;

    std::chrono::milliseconds delay = options_.first_delay;
    int attempts = 0;
    while (true) {
        Clock::time_point now = Clock::now();
        if (attempts_left <= 0 || (deadline && now >= *deadline))
            throw Error(token_name_ + " was not found again after " + std::to_string(attempts) +
                            " reopen attempts in " + seconds_text(now - start),
                        "check the token or HSM, then run the command again");

        // The last wait is cut short, so that one attempt falls on the deadline.
        Clock::duration wait = delay;
        if (deadline)
            wait = std::min(wait, *deadline - now);
        std::this_thread::sleep_for(wait);
        delay = std::min(delay * 2, options_.max_delay);
        --attempts_left;
        ++attempts;

        try {
            handlers_.open();
            ++recoveries_;
            log(token_name_ + " reopened");
            return;
        } catch (const Error &error) {
            if (!worth_retrying(error))
                throw;
            log("reopening " + token_name_ + " failed: " + error.what());
        }
    }
}

void TokenRecovery::log(const std::string &line) const {
    if (options_.log)
        options_.log(line);
}

RecoveringTokenKey::RecoveringTokenKey(Pkcs11Uri key_uri,
                                       std::optional<Pkcs11Uri> certificate_uri,
                                       TokenOptions token, RecoveryOptions recovery,
                                       bool certificate_on_token)
    : key_uri_(std::move(key_uri)), certificate_uri_(std::move(certificate_uri)),
      token_(std::move(token)), certificate_on_token_(certificate_on_token),
      key_(std::make_unique<TokenKey>(
          open_token_key(key_uri_, certificate_uri_, token_, certificate_on_token_))),
      recovery_("the token of key '" + key_uri_.to_string() + "'", std::move(recovery),
                {[this](const Error &error) { return lost_reason(error); },
                 [this] { key_.reset(); }, // frees the key, the slots and the libp11 context
                 [this] {
                     key_ = std::make_unique<TokenKey>(open_token_key(
                         key_uri_, certificate_uri_, token_, certificate_on_token_));
                 }}) {
    if (X509 *certificate = key_->certificate()) {
        X509_up_ref(certificate);
        certificate_.reset(certificate);
    }
}

std::optional<std::string> RecoveringTokenKey::lost_reason(const Error &error) const {
    if (std::optional<std::string> reason = token_lost_reason(error))
        return reason;
    if (unsigned long probed = key_->probe(); is_token_lost(probed))
        return ckr_name(probed);
    return std::nullopt;
}

void RecoveringTokenKey::run(const std::function<void(const TokenKey &key)> &operation) {
    recovery_.run([&] { operation(*key_); });
}

} // namespace p11smime
