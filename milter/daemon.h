// The state shared by the libmilter callbacks, the signal loop and the key recovery thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "milter/filter.h"
#include "milter/key_store.h"
#include "milter/log.h"

namespace p11smime::milter {

class Daemon {
  public:
    explicit Daemon(std::shared_ptr<const Runtime> runtime);

    Logger &logger() { return logger_; }
    KeyStore &keys() { return keys_; }

    // The configuration in force; a message keeps the one it started with.
    std::shared_ptr<const Runtime> runtime();

    // Replaces the configuration, and the keys when their settings changed. Returns false when
    // the keys could not be opened now.
    bool apply(std::shared_ptr<const Runtime> runtime, bool force_keys);

    // Counts a message from MAIL FROM to its end. begin_message() returns false once stopping.
    bool begin_message();
    void end_message();

    // Stops taking new messages and waits up to timeout_seconds for those in flight. Returns
    // the number still in flight.
    int drain(int timeout_seconds);

  private:
    Logger logger_;
    KeyStore keys_;
    std::mutex runtime_mutex_;
    std::shared_ptr<const Runtime> runtime_;
    std::string key_settings_; // the key settings in force, to tell when a reload changes them

    std::mutex messages_mutex_;
    std::condition_variable messages_done_;
    int in_flight_ = 0;
    bool stopping_ = false;
};

// Builds the Runtime for a parsed configuration: the authserv-id falls back to the host name.
std::shared_ptr<const Runtime> make_runtime(Config config);

// Returns the key store settings of a configuration. Throws ConfigError when the PIN file
// path cannot be resolved.
KeyStoreSettings key_settings(const Config &config);

// Registers the callbacks with libmilter for daemon and opens the listening socket. Throws
// Error when libmilter refuses the socket.
void register_milter(Daemon &daemon, const std::string &socket);

// Runs libmilter's accept loop until stop_milter(); returns true when it ended without error.
bool run_milter();

// Stops libmilter: the listening socket closes, and its worker pool stops serving the
// connections that are still open.
void stop_milter();

} // namespace p11smime::milter
