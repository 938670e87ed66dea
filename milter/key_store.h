// The milter's token keys: opened once and kept logged in, shared by the worker threads, and
// reopened with backoff after the token is lost.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/ossl.h"
#include "milter/config.h"
#include "milter/log.h"
#include "token/token.h"

namespace p11smime::milter {

// Raised when the token keys are not open: the token is lost, being reopened, or the PIN was
// rejected. The milter replies with a temporary failure, so the MTA keeps the message.
class TokenUnavailable : public Error {
  public:
    using Error::Error;
};

// What a key is used for, which decides the test operation that checks it.
enum class KeyPurpose { sign, decrypt };

// A key opened on the token with its certificate and the chain to send with a signature.
struct OpenedKey {
    TokenKey token_key;
    X509Ptr certificate_from_file; // set when the configuration names a certificate file
    X509StackPtr chain;

    EVP_PKEY *key() const { return token_key.key(); }
    X509 *certificate() const {
        return certificate_from_file ? certificate_from_file.get() : token_key.certificate();
    }
};

// A counting semaphore bounding the token operations that run at once.
class Permits {
  public:
    explicit Permits(int count) : available_(count) {}
    void acquire();
    void release();

  private:
    std::mutex mutex_;
    std::condition_variable released_;
    int available_;
};

struct KeyStoreSettings {
    std::optional<std::string> module;
    std::string pin_file;
    int sessions = 4;
    int retry_initial_seconds = 1;
    int retry_max_seconds = 60;

    struct Key {
        KeyReference reference;
        KeyPurpose purpose = KeyPurpose::sign;
    };
    std::vector<Key> keys;
};

// Keeps every key of the configuration open on the token, logged in, for the life of the
// daemon. Worker threads borrow the keys through a Lease. At most `sessions` leases exist at
// once, so libp11, which opens one PKCS#11 session per concurrent operation, never needs more
// than that many sessions per key.
//
// When a key fails its test operation, the store marks the token lost and a background thread
// rebuilds the libp11 state. It frees every key and its module context (slots released,
// module unloaded and freed), then loads the module again and logs in. After a failure it
// waits retry_initial seconds, then twice as long after each further failure, up to
// retry_max. A rejected PIN is never retried: the store stays closed until reconfigure().
//
// The store does not use token/'s TokenRecovery, because that makes workers wait for the
// reopen, where a milter must reply 451 at once and let the MTA retry.
// NOTE: each distinct key URI gets its own libp11 context (open_token_key opens one per key),
// so all keys are freed and opened together, because unloading one context finalises the
// module for the others. One context with one session pool for all keys would need less.
class KeyStore {
  public:
    explicit KeyStore(Logger &logger);
    ~KeyStore();
    KeyStore(const KeyStore &) = delete;
    KeyStore &operator=(const KeyStore &) = delete;

    // Closes the current keys and opens the keys of settings. Returns false when they could
    // not be opened now; the background thread then retries, unless the PIN was rejected.
    bool reconfigure(KeyStoreSettings settings);

    // Closes every key and stops the background thread. Waits for leases in use.
    void close();

    // Shared access to the open keys for one operation.
    class Lease {
      public:
        ~Lease();
        Lease(Lease &&other) noexcept;
        Lease &operator=(Lease &&) = delete;

        // Returns the key opened for reference; throws TokenUnavailable when it is unknown,
        // as after a reload that dropped it.
        const OpenedKey &key(const KeyReference &reference) const;

      private:
        friend class KeyStore;
        Lease(const KeyStore &store, std::shared_ptr<Permits> permits,
              std::shared_lock<std::shared_mutex> lock);

        const KeyStore *store_;
        std::shared_ptr<Permits> permits_; // null once moved from
        std::shared_lock<std::shared_mutex> lock_;
    };

    // Waits for a free session permit and returns a lease. Throws TokenUnavailable at once when
    // the token is lost or being reopened.
    Lease lease();

    // Runs a test operation with the key of reference after an operation with it failed. When
    // the test fails too, marks the token lost, starts recovery and returns false. When it
    // succeeds, the failure was the message's, and it returns true.
    bool check_key(const Lease &lease, const KeyReference &reference, KeyPurpose purpose);

    bool available() const { return available_; }

    // True when the token rejected the PIN; only reconfigure() tries again.
    bool pin_rejected();

  private:
    bool open_keys();
    void mark_lost(const std::string &reason);
    void recovery_loop();
    void recover();
    bool wait_for_retry(std::chrono::seconds delay);

    Logger &logger_;
    std::shared_ptr<Permits> permits_; // replaced when sessions changes

    std::shared_mutex keys_mutex_;          // shared by leases, exclusive while keys change
    std::map<std::string, OpenedKey> keys_; // by KeyReference::identity()
    KeyStoreSettings settings_;

    std::mutex control_mutex_; // guards the flags below
    std::condition_variable control_changed_;
    bool lost_ = false; // recovery should run
    bool pin_rejected_ = false;
    bool stopping_ = false;
    std::atomic<bool> available_{false};
    std::thread recovery_thread_;
};

} // namespace p11smime::milter
