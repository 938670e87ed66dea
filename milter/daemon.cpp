#include "milter/daemon.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>

namespace p11smime::milter {
namespace {

std::string describe(const KeyStoreSettings &settings) {
    std::string text = settings.module.value_or("") + "\n" + settings.pin_file + "\n" +
                       std::to_string(settings.sessions) + "\n" +
                       std::to_string(settings.retry_initial_seconds) + "\n" +
                       std::to_string(settings.retry_max_seconds);
    for (const auto &key : settings.keys)
        text += "\n" + key.reference.identity();
    return text;
}

} // namespace

Daemon::Daemon(std::shared_ptr<const Runtime> runtime)
    : logger_(runtime->config.log), keys_(logger_), runtime_(std::move(runtime)) {}

std::shared_ptr<const Runtime> Daemon::runtime() {
    std::lock_guard lock(runtime_mutex_);
    return runtime_;
}

bool Daemon::apply(std::shared_ptr<const Runtime> runtime, bool force_keys) {
    KeyStoreSettings settings = key_settings(runtime->config);
    logger_.set_target(runtime->config.log);
    {
        std::lock_guard lock(runtime_mutex_);
        runtime_ = std::move(runtime);
    }
    std::string described = describe(settings);
    if (!force_keys && described == key_settings_ && !keys_.pin_rejected())
        return true;
    key_settings_ = described;
    if (settings.keys.empty()) {
        keys_.reconfigure(std::move(settings));
        return true;
    }
    return keys_.reconfigure(std::move(settings));
}

bool Daemon::begin_message() {
    std::lock_guard lock(messages_mutex_);
    if (stopping_)
        return false;
    ++in_flight_;
    return true;
}

void Daemon::end_message() {
    {
        std::lock_guard lock(messages_mutex_);
        --in_flight_;
    }
    messages_done_.notify_all();
}

int Daemon::drain(int timeout_seconds) {
    std::unique_lock lock(messages_mutex_);
    stopping_ = true;
    messages_done_.wait_for(lock, std::chrono::seconds(timeout_seconds),
                            [this] { return in_flight_ == 0; });
    return in_flight_;
}

std::shared_ptr<const Runtime> make_runtime(Config config) {
    auto runtime = std::make_shared<Runtime>();
    runtime->authserv_id = config.authserv_id;
    if (runtime->authserv_id.empty()) {
        char host[256] = {};
        gethostname(host, sizeof host - 1);
        runtime->authserv_id = host;
    }
    runtime->config = std::move(config);
    return runtime;
}

KeyStoreSettings key_settings(const Config &config) {
    KeyStoreSettings settings;
    settings.module = config.module;
    if (config.pin_file)
        settings.pin_file = resolve_pin_file(config, std::getenv("CREDENTIALS_DIRECTORY"));
    settings.sessions = config.sessions;
    settings.retry_initial_seconds = config.retry_initial_seconds;
    settings.retry_max_seconds = config.retry_max_seconds;
    for (const auto &rule : config.sign_rules)
        settings.keys.push_back({rule.key, KeyPurpose::sign});
    for (const auto &rule : config.decrypt_rules)
        settings.keys.push_back({rule.key, KeyPurpose::decrypt});
    return settings;
}

} // namespace p11smime::milter
