#include "milter/log.h"

#include <syslog.h>

#include <cstdio>

namespace p11smime::milter {
namespace {

const char *level_name(LogLevel level) {
    switch (level) {
    case LogLevel::error:
        return "error";
    case LogLevel::warning:
        return "warning";
    default:
        return "info";
    }
}

int syslog_priority(LogLevel level) {
    switch (level) {
    case LogLevel::error:
        return LOG_ERR;
    case LogLevel::warning:
        return LOG_WARNING;
    default:
        return LOG_INFO;
    }
}

} // namespace

Logger::Logger(LogTarget target) {
    set_target(target);
}

Logger::~Logger() {
    if (syslog_open_)
        closelog();
}

void Logger::set_target(LogTarget target) {
    std::lock_guard lock(mutex_);
    target_ = target;
    if (target == LogTarget::syslog && !syslog_open_) {
        openlog("p11smime-milter", LOG_PID, LOG_MAIL);
        syslog_open_ = true;
    }
}

void Logger::write(LogLevel level, const std::string &message) {
    std::lock_guard lock(mutex_);
    if (target_ == LogTarget::syslog) {
        syslog(syslog_priority(level), "%s: %s", level_name(level), message.c_str());
        return;
    }
    std::fprintf(stderr, "p11smime-milter: %s: %s\n", level_name(level), message.c_str());
    std::fflush(stderr);
}

std::string log_quote(const std::string &value) {
    bool plain = !value.empty();
    for (unsigned char c : value)
        if (c <= ' ' || c == '"' || c == '\\' || c >= 0x7f)
            plain = false;
    if (plain)
        return value;

    std::string quoted = "\"";
    for (unsigned char c : value) {
        if (c == '"' || c == '\\')
            quoted += '\\';
        quoted += (c < ' ' || c == 0x7f) ? '?' : static_cast<char>(c);
    }
    return quoted + "\"";
}

} // namespace p11smime::milter
