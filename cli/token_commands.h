// The token lifecycle subcommands (keygen, csr, import) and the reader and health checks
// (readers, doctor). Each returns the process exit status, as in commands.h.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace p11smime::cli {

struct KeygenCommandOptions {
    CommonOptions common;
    std::string token;
    std::string type;
    std::string label;
    std::optional<std::string> id; // hexadecimal
};

struct CsrCommandOptions {
    CommonOptions common;
    std::string key;
    std::string email;
    std::optional<std::string> subject;
    std::string use = "both";
    std::optional<std::string> out;
};

struct ImportCommandOptions {
    CommonOptions common;
    std::string token;
    std::string cert;
    std::optional<std::string> chain;
    bool force = false;
    bool replace = false;
    std::optional<std::string> label;
    std::optional<std::string> id; // hexadecimal
};

struct ReadersCommandOptions {
    CommonOptions common;
    bool wait = false;
    unsigned int timeout = 0; // seconds; 0 waits without limit
    std::optional<std::string> reader;
    bool json = false;
};

struct DoctorCommandOptions {
    CommonOptions common;
    std::optional<std::string> token; // check only the tokens matching this URI
    bool login = false;
};

// Register the subcommands with the application; the options are filled in when parsing.
CLI::App *add_keygen(CLI::App &app, KeygenCommandOptions &options);
CLI::App *add_csr(CLI::App &app, CsrCommandOptions &options);
CLI::App *add_import(CLI::App &app, ImportCommandOptions &options);
CLI::App *add_readers(CLI::App &app, ReadersCommandOptions &options);
CLI::App *add_doctor(CLI::App &app, DoctorCommandOptions &options);

int run_keygen(const KeygenCommandOptions &options);
int run_csr(const CsrCommandOptions &options);
int run_import(const ImportCommandOptions &options);
int run_readers(const ReadersCommandOptions &options);

// Returns 0 when nothing blocks signing (warnings may be printed) and 2 when a problem does.
int run_doctor(const DoctorCommandOptions &options);

} // namespace p11smime::cli
