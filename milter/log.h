// The milter's log: one line per event on stderr or to syslog (facility mail).
#pragma once

#include <mutex>
#include <string>

#include "milter/config.h"

namespace p11smime::milter {

enum class LogLevel { error, warning, info };

// A thread-safe log. Callers pass key=value text; message content and PINs never belong in it.
class Logger {
  public:
    explicit Logger(LogTarget target = LogTarget::stderr_stream);
    ~Logger();
    Logger(const Logger &) = delete;
    Logger &operator=(const Logger &) = delete;

    // Switches between stderr and syslog, as a reloaded configuration requests.
    void set_target(LogTarget target);

    void write(LogLevel level, const std::string &message);
    void error(const std::string &message) { write(LogLevel::error, message); }
    void warning(const std::string &message) { write(LogLevel::warning, message); }
    void info(const std::string &message) { write(LogLevel::info, message); }

  private:
    std::mutex mutex_;
    LogTarget target_;
    bool syslog_open_ = false;
};

// Quotes a value for a key=value log line when it contains spaces, quotes or controls.
std::string log_quote(const std::string &value);

} // namespace p11smime::milter
