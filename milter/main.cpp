// p11smime-milter: signs outbound and decrypts inbound S/MIME mail for Postfix or Sendmail,
// with keys that stay on a PKCS#11 token.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "milter/daemon.h"

using namespace p11smime;
using namespace p11smime::milter;

namespace {

constexpr int exit_usage = 2;

int signal_pipe[2] = {-1, -1};

// Async-signal-safe: passes the signal number to the main loop through the pipe.
void forward_signal(int number) {
    int saved_errno = errno;
    unsigned char byte = static_cast<unsigned char>(number);
    [[maybe_unused]] ssize_t written = write(signal_pipe[1], &byte, 1);
    errno = saved_errno;
}

sigset_t handled_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    return set;
}

// Blocks the handled signals in the calling thread, so every thread started afterwards
// inherits the mask and only the main thread receives them.
void block_signals() {
    sigset_t set = handled_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// NOTE: libmilter's own signal thread (sigwait on SIGHUP, SIGTERM and SIGINT) stops the
// milter on SIGHUP. The main thread keeps these signals unblocked with a handler; Linux
// delivers a signal sent to the process to its main thread when that thread does not block
// it, so the reload path runs instead. libmilter's thread would get it only if the main
// thread already had a signal pending.
void install_handlers() {
    if (pipe(signal_pipe) != 0)
        throw Error("cannot create the signal pipe");
    struct sigaction action {};
    action.sa_handler = forward_signal;
    sigemptyset(&action.sa_mask);
    for (int number : {SIGHUP, SIGTERM, SIGINT})
        sigaction(number, &action, nullptr);
    sigset_t set = handled_signals();
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

int wait_for_signal() {
    unsigned char byte = 0;
    for (;;) {
        ssize_t count = read(signal_pipe[0], &byte, 1);
        if (count == 1)
            return byte;
        if (count < 0 && errno == EINTR)
            continue;
        return SIGTERM;
    }
}

void reload(Daemon &daemon, const std::string &path) {
    std::shared_ptr<const Runtime> current = daemon.runtime();
    try {
        std::shared_ptr<const Runtime> runtime = make_runtime(load_config(path));
        if (runtime->config.socket != current->config.socket)
            daemon.logger().warning(
                "event=reload socket_change_ignored=" + log_quote(runtime->config.socket) +
                " hint=\"restart the milter to listen on a new socket\"");
        bool keys_open = daemon.apply(runtime, false);
        daemon.logger().info(std::string("event=reload result=ok keys=") +
                             (keys_open ? "open" : "unavailable"));
    } catch (const Error &error) {
        daemon.logger().error("event=reload result=failed error=" + log_quote(error.what()) +
                              " hint=" + log_quote(error.hint()) +
                              " action=\"kept the previous configuration\"");
    }
}

// Handles signals until SIGTERM or SIGINT, or until libmilter stops on its own.
void signal_loop(Daemon &daemon, const std::string &path) {
    for (;;) {
        int number = wait_for_signal();
        if (number == SIGHUP) {
            reload(daemon, path);
            continue;
        }
        daemon.logger().info(std::string("event=stop signal=") +
                             (number == SIGINT ? "SIGINT" : "SIGTERM"));
        return;
    }
}

// Reports the result of --check: the configuration parsed and its keys opened.
int report_check(Daemon &daemon, bool keys_open, const std::string &path) {
    daemon.keys().close();
    if (!keys_open)
        throw Error("the configuration is valid but its keys could not be opened",
                    "see the token-open-failed line above");
    std::cerr << "p11smime-milter: configuration " << path << " is valid\n";
    return 0;
}

// Serves the MTA until SIGTERM or SIGINT, then finishes the messages in flight.
int serve(Daemon &daemon, const Runtime &runtime, const std::string &path) {
    register_milter(daemon, runtime.config.socket);
    daemon.logger().info("event=start socket=" + log_quote(runtime.config.socket) +
                         " sign_rules=" + std::to_string(runtime.config.sign_rules.size()) +
                         " decrypt_rules=" + std::to_string(runtime.config.decrypt_rules.size()) +
                         " verify=" + (runtime.config.verify.enabled ? "yes" : "no"));
    std::atomic<bool> stopping{false};
    std::thread milter_thread([&daemon, &stopping] {
        bool clean = run_milter();
        if (stopping)
            return;
        daemon.logger().error(std::string("event=libmilter-stopped clean=") +
                              (clean ? "yes" : "no"));
        kill(getpid(), SIGTERM); // to the process, so the main thread receives it
    });
    install_handlers();
    signal_loop(daemon, path);

    // Debian's libmilter is built with its worker pool, whose threads stop serving open
    // connections once smfi_stop() is called. So the messages in flight finish first, while
    // new ones get a temporary failure, and only then does the listener stop.
    int left = daemon.drain(daemon.runtime()->config.shutdown_timeout_seconds);
    stopping = true;
    stop_milter();
    milter_thread.join();
    daemon.logger().info("event=stopped messages_cut_off=" + std::to_string(left));
    daemon.keys().close();
    std::_Exit(0); // libmilter's worker threads are detached and are not joined
}

int run(const std::string &path, bool check_only) {
    std::shared_ptr<const Runtime> runtime = make_runtime(load_config(path));
    block_signals();
    Daemon daemon(runtime);
    bool keys_open = daemon.apply(runtime, true);
    if (daemon.keys().pin_rejected())
        throw Error("the token rejected the PIN; the milter does not retry it",
                    "correct the PIN file named by pin_file");
    if (check_only)
        return report_check(daemon, keys_open, path);
    return serve(daemon, *runtime, path);
}

} // namespace

int main(int argc, char **argv) {
    CLI::App app{"p11smime-milter: sign outbound and decrypt inbound S/MIME mail at a Postfix "
                 "or Sendmail gateway, with keys on a PKCS#11 token"};
    std::string config_path = "/etc/p11smime-milter/milter.conf";
    bool check_only = false;
    app.add_option("-c,--config", config_path, "configuration file")->capture_default_str();
    app.add_flag("--check", check_only,
                 "check the configuration and open its keys, then exit without serving");
    CLI11_PARSE(app, argc, argv);

    try {
        return run(config_path, check_only);
    } catch (const Error &error) {
        std::cerr << "p11smime-milter: error: " << error.what() << "\n";
        if (!error.hint().empty())
            std::cerr << "p11smime-milter: hint: " << error.hint() << "\n";
        return exit_usage;
    }
}
