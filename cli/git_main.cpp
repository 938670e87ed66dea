// p11smime-git: signs and verifies git commits and tags with a key on a PKCS#11 token. Git
// runs it as it would run gpgsm, so it takes gpgsm's options, parsed with getopt_long so that
// bundled short options such as "-bsau KEY" work as they do in gpgsm.
#include <getopt.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "cli/git.h"
#include "common/error.h"

using namespace p11smime;
using namespace p11smime::cli;

namespace {

constexpr int exit_usage = 2;

constexpr const char *usage_text =
    "Usage: p11smime-git [--status-fd=N] -bsau KEY            sign stdin (detached, armored)\n"
    "       p11smime-git [--status-fd=N] --verify SIGFILE [-|DATAFILE]\n"
    "\n"
    "A gpgsm-compatible signer for git with keys on a PKCS#11 token:\n"
    "  git config gpg.format x509\n"
    "  git config gpg.x509.program p11smime-git\n"
    "KEY is a pkcs11: URI, a certificate's SHA-1 fingerprint, an email address or\n"
    "\"Name <email>\". Settings: P11SMIME_MODULE or p11smime.module, P11SMIME_PIN_FILE or\n"
    "p11smime.pinFile, P11SMIME_CA_FILE or p11smime.caFile, P11SMIME_CA_PATH or\n"
    "p11smime.caPath, P11SMIME_SYSTEM_CA or p11smime.systemCa.\n"
    "Exit status: 0 success, 1 a signature or certificate check failed, 2 a usage, input\n"
    "or environment error. See p11smime-git(1).\n";

enum LongOnly { status_fd_option = 256, verify_option, keyid_format_option, help_option };

struct Arguments {
    bool sign = false;
    bool detach = false;
    bool armor = false;
    bool verify = false;
    bool help = false;
    std::string key;
    int status_fd = -1;
    std::vector<std::string> operands;
};

int parse_fd(const char *text) {
    char *end = nullptr;
    long value = std::strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value < 0 || value > 1024)
        throw Error(std::string("invalid --status-fd value '") + text + "'",
                    "give a file descriptor number such as 1 or 2");
    return static_cast<int>(value);
}

Arguments parse_arguments(int argc, char **argv) {
    static const option long_options[] = {
        {"status-fd", required_argument, nullptr, status_fd_option},
        {"verify", no_argument, nullptr, verify_option},
        {"keyid-format", required_argument, nullptr, keyid_format_option},
        {"detach-sign", no_argument, nullptr, 'b'},
        {"sign", no_argument, nullptr, 's'},
        {"armor", no_argument, nullptr, 'a'},
        {"local-user", required_argument, nullptr, 'u'},
        {"help", no_argument, nullptr, help_option},
        {nullptr, 0, nullptr, 0},
    };
    Arguments arguments;
    opterr = 0;
    int option = 0;
    while ((option = getopt_long(argc, argv, "bsau:h", long_options, nullptr)) != -1) {
        switch (option) {
        case 'b':
            arguments.detach = true;
            break;
        case 's':
            arguments.sign = true;
            break;
        case 'a':
            arguments.armor = true;
            break;
        case 'u':
            arguments.key = optarg;
            break;
        case status_fd_option:
            arguments.status_fd = parse_fd(optarg);
            break;
        case verify_option:
            arguments.verify = true;
            break;
        case keyid_format_option: // an OpenPGP display option that git may pass; no effect
            break;
        case 'h':
        case help_option:
            arguments.help = true;
            break;
        default:
            std::string name = optopt > 0 && optopt < 256 ? std::string("-") + char(optopt)
                                                           : std::string(argv[optind - 1]);
            throw Error("unknown option or missing value: '" + name + "'",
                        "see 'p11smime-git --help'");
        }
    }
    for (int i = optind; i < argc; ++i)
        arguments.operands.emplace_back(argv[i]);
    return arguments;
}

GitSignRequest sign_request(const Arguments &arguments) {
    if (!arguments.detach)
        throw Error("only detached signatures (-b) are supported",
                    "git asks for them with -bsau KEY");
    if (arguments.key.empty())
        throw Error("no signing key given", "pass -u KEY, as git does with user.signingKey");
    if (!arguments.operands.empty())
        throw Error("unexpected operand '" + arguments.operands.front() + "'",
                    "p11smime-git signs standard input only");
    GitSignRequest request;
    request.key = arguments.key;
    request.armor = arguments.armor;
    request.status_fd = arguments.status_fd;
    return request;
}

GitVerifyRequest verify_request(const Arguments &arguments) {
    if (arguments.operands.empty() || arguments.operands.size() > 2)
        throw Error("--verify takes a signature file and optionally a data file",
                    "run p11smime-git --verify SIGFILE - <data");
    GitVerifyRequest request;
    request.signature_file = arguments.operands[0];
    if (arguments.operands.size() == 2)
        request.data_file = arguments.operands[1];
    request.status_fd = arguments.status_fd;
    return request;
}

int run(int argc, char **argv) {
    Arguments arguments = parse_arguments(argc, argv);
    if (arguments.help) {
        std::cout << usage_text;
        return 0;
    }
    if (arguments.verify && (arguments.sign || arguments.detach))
        throw Error("--verify cannot be combined with signing options");
    if (arguments.verify)
        return run_git_verify(verify_request(arguments), read_git_settings());
    if (arguments.sign || arguments.detach)
        return run_git_sign(sign_request(arguments), read_git_settings());
    throw Error("nothing to do", "pass -bsau KEY to sign or --verify SIGFILE - to verify");
}

} // namespace

int main(int argc, char **argv) {
    try {
        return run(argc, argv);
    } catch (const Error &error) {
        std::cerr << "p11smime: error: " << error.what() << "\n";
        if (!error.hint().empty())
            std::cerr << "p11smime: hint: " << error.hint() << "\n";
        return exit_usage;
    } catch (const std::exception &error) {
        std::cerr << "p11smime: error: " << error.what() << "\n";
        return exit_usage;
    }
}
