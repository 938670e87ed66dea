#include "milter/key_store.h"

#include <chrono>

#include <openssl/pem.h>

#include "token/key_test.h"

namespace p11smime::milter {
namespace {

using Clock = std::chrono::steady_clock;

X509StackPtr read_pem_certificates(const std::string &path) {
    BioPtr bio(BIO_new_file(path.c_str(), "r"));
    if (!bio)
        throw OpensslError("cannot read certificate file '" + path + "'",
                           "check the certificate or chain setting in the configuration");
    X509StackPtr certificates(sk_X509_new_null());
    while (X509 *certificate = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
        sk_X509_push(certificates.get(), certificate);
    clear_openssl_errors(); // the read loop ends on an expected "no start line"
    if (sk_X509_num(certificates.get()) == 0)
        throw Error("no PEM certificate in '" + path + "'",
                    "the file must contain -----BEGIN CERTIFICATE----- blocks");
    return certificates;
}

void append_copies(STACK_OF(X509) * to, STACK_OF(X509) * from) {
    for (int i = 0; i < sk_X509_num(from); ++i) {
        X509 *certificate = sk_X509_value(from, i);
        X509_up_ref(certificate);
        sk_X509_push(to, certificate);
    }
}

OpenedKey open_key(const KeyReference &reference, const TokenOptions &options) {
    bool certificate_on_token = !reference.certificate_file;
    TokenKey token_key =
        open_token_key(reference.uri, reference.certificate_uri, options, certificate_on_token);
    OpenedKey opened{std::move(token_key), nullptr, X509StackPtr(sk_X509_new_null())};
    if (reference.certificate_file) {
        X509StackPtr certificates = read_pem_certificates(*reference.certificate_file);
        opened.certificate_from_file.reset(sk_X509_shift(certificates.get()));
    }
    append_copies(opened.chain.get(), opened.token_key.chain());
    if (reference.chain_file)
        append_copies(opened.chain.get(), read_pem_certificates(*reference.chain_file).get());
    return opened;
}

// True for a login failure that must not be repeated: retrying a wrong PIN spends the
// token's tries until it locks.
bool is_pin_rejection(const Error &error) {
    const auto *pkcs11 = dynamic_cast<const Pkcs11Error *>(&error);
    if (!pkcs11)
        return false;
    std::string name = ckr_name(pkcs11->rv());
    return name == "CKR_PIN_INCORRECT" || name == "CKR_PIN_INVALID" ||
           name == "CKR_PIN_LEN_RANGE" || name == "CKR_PIN_EXPIRED" || name == "CKR_PIN_LOCKED";
}

} // namespace

void Permits::acquire() {
    std::unique_lock lock(mutex_);
    released_.wait(lock, [this] { return available_ > 0; });
    --available_;
}

void Permits::release() {
    {
        std::lock_guard lock(mutex_);
        ++available_;
    }
    released_.notify_one();
}

KeyStore::Lease::Lease(const KeyStore &store, std::shared_ptr<Permits> permits,
                       std::shared_lock<std::shared_mutex> lock)
    : store_(&store), permits_(std::move(permits)), lock_(std::move(lock)) {}

KeyStore::Lease::Lease(Lease &&other) noexcept
    : store_(other.store_), permits_(std::move(other.permits_)), lock_(std::move(other.lock_)) {}

KeyStore::Lease::~Lease() {
    if (lock_.owns_lock())
        lock_.unlock();
    if (permits_)
        permits_->release();
}

const OpenedKey &KeyStore::Lease::key(const KeyReference &reference) const {
    auto found = store_->keys_.find(reference.identity());
    if (found == store_->keys_.end())
        throw TokenUnavailable("key " + reference.uri.to_string() + " is not open");
    return found->second;
}

KeyStore::KeyStore(Logger &logger) : logger_(logger) {
    recovery_thread_ = std::thread([this] { recovery_loop(); });
}

KeyStore::~KeyStore() {
    close();
}

bool KeyStore::reconfigure(KeyStoreSettings settings) {
    {
        std::lock_guard control(control_mutex_);
        available_ = false;
        lost_ = false;
        pin_rejected_ = false;
    }
    std::unique_lock keys_lock(keys_mutex_);
    settings_ = std::move(settings);
    permits_ = std::make_shared<Permits>(settings_.sessions);
    keys_lock.unlock();
    if (open_keys())
        return true;

    std::lock_guard control(control_mutex_);
    lost_ = !pin_rejected_;
    control_changed_.notify_all();
    return false;
}

bool KeyStore::pin_rejected() {
    std::lock_guard control(control_mutex_);
    return pin_rejected_;
}

void KeyStore::close() {
    {
        std::lock_guard control(control_mutex_);
        stopping_ = true;
        available_ = false;
    }
    control_changed_.notify_all();
    if (recovery_thread_.joinable())
        recovery_thread_.join();
    std::unique_lock keys_lock(keys_mutex_);
    keys_.clear();
}

KeyStore::Lease KeyStore::lease() {
    if (!available_)
        throw TokenUnavailable("the token is unavailable");
    std::shared_ptr<Permits> permits;
    {
        std::shared_lock keys_lock(keys_mutex_);
        permits = permits_;
    }
    permits->acquire();
    std::shared_lock keys_lock(keys_mutex_);
    if (!available_) {
        permits->release();
        throw TokenUnavailable("the token is unavailable");
    }
    return Lease(*this, std::move(permits), std::move(keys_lock));
}

bool KeyStore::check_key(const Lease &lease, const KeyReference &reference, KeyPurpose purpose) {
    const OpenedKey &key = lease.key(reference);
    std::string error;
    bool healthy = purpose == KeyPurpose::sign
                       ? test_signature(key.key(), error)
                       : test_decryption(key.key(), key.certificate(), error);
    if (!healthy)
        mark_lost("key=" + log_quote(reference.uri.to_string()) +
                  " test=" + (purpose == KeyPurpose::sign ? "sign" : "decrypt") +
                  " error=" + log_quote(error));
    return healthy;
}

void KeyStore::mark_lost(const std::string &reason) {
    std::lock_guard control(control_mutex_);
    if (lost_ || pin_rejected_ || stopping_)
        return;
    available_ = false;
    lost_ = true;
    logger_.error("event=token-lost " + reason);
    control_changed_.notify_all();
}

// Frees the old keys first: unloading an old context would finalise the module under the new
// ones. Must be called without a lease held by this thread.
bool KeyStore::open_keys() {
    std::unique_lock keys_lock(keys_mutex_);
    keys_.clear();

    TokenOptions options;
    options.module = settings_.module;
    options.pin_file = settings_.pin_file;
    options.warn = [this](const std::string &message) {
        logger_.warning("event=token-warning message=" + log_quote(message));
    };

    try {
        for (const auto &key : settings_.keys) {
            std::string identity = key.reference.identity();
            if (!keys_.count(identity))
                keys_.emplace(identity, open_key(key.reference, options));
        }
    } catch (const Error &error) {
        keys_.clear();
        std::lock_guard control(control_mutex_);
        pin_rejected_ = is_pin_rejection(error);
        std::string hint = error.hint().empty() ? "" : " hint=" + log_quote(error.hint());
        logger_.error(std::string("event=token-open-failed error=") + log_quote(error.what()) +
                      hint + (pin_rejected_ ? " retry=never" : ""));
        return false;
    }
    available_ = true;
    logger_.info("event=token-open keys=" + std::to_string(keys_.size()) +
                 " sessions=" + std::to_string(settings_.sessions));
    return true;
}

bool KeyStore::wait_for_retry(std::chrono::seconds delay) {
    std::unique_lock control(control_mutex_);
    control_changed_.wait_for(control, delay, [this] { return stopping_; });
    return !stopping_ && lost_;
}

void KeyStore::recovery_loop() {
    for (;;) {
        {
            std::unique_lock control(control_mutex_);
            control_changed_.wait(control, [this] { return stopping_ || lost_; });
            if (stopping_)
                return;
        }
        recover();
    }
}

// Reopens the keys until they open, the PIN is rejected, the store stops or reconfigure()
// takes over, waiting longer after each failure.
void KeyStore::recover() {
    Clock::time_point lost_at = Clock::now();
    std::chrono::seconds delay;
    std::chrono::seconds max_delay;
    {
        std::shared_lock keys_lock(keys_mutex_);
        delay = std::chrono::seconds(settings_.retry_initial_seconds);
        max_delay = std::chrono::seconds(settings_.retry_max_seconds);
    }

    for (int attempt = 1;; ++attempt) {
        if (open_keys()) {
            auto seconds =
                std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - lost_at);
            logger_.info("event=token-recovered attempts=" + std::to_string(attempt) +
                         " unavailable_seconds=" + std::to_string(seconds.count()));
            std::lock_guard control(control_mutex_);
            lost_ = false;
            return;
        }
        {
            std::lock_guard control(control_mutex_);
            if (pin_rejected_) {
                lost_ = false;
                return;
            }
        }
        logger_.warning("event=token-retry attempt=" + std::to_string(attempt) +
                        " next_seconds=" + std::to_string(delay.count()));
        if (!wait_for_retry(delay))
            return;
        delay = std::min(delay * 2, max_delay);
    }
}

} // namespace p11smime::milter
