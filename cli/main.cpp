// p11smime: sign and verify S/MIME mail with keys that stay on a PKCS#11 token.
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/batch.h"
#include "cli/commands.h"
#include "cli/sendmail.h"
#include "cli/token_commands.h"
#include "common/error.h"
#include "token/recovery.h"

using namespace p11smime;
using namespace p11smime::cli;

namespace {

constexpr int exit_usage = 2;

void add_token_options(CLI::App *command, CommonOptions &common) {
    command->add_option("--module", common.module,
                        "PKCS#11 module to load (default: $P11SMIME_MODULE, else p11-kit's "
                        "proxy with every registered module)");
    command->add_option("--pin-file", common.pin_file,
                        "file whose first line is the user PIN (default: ask on the terminal)");
}

void add_encryption_options(CLI::App *command, EncryptionSettings &settings,
                            const std::string &recipient_flag) {
    command->add_option(recipient_flag, settings.recipients,
                        "recipient certificate: a PEM/DER file or a PKCS#11 URI (repeatable)");
    command->add_option("--cert-dir", settings.cert_dir,
                        "folder of recipient certificates, picked by the To, Cc and Bcc "
                        "addresses");
    command
        ->add_option("--cipher", settings.cipher,
                     "content cipher; the GCM ciphers give AuthEnvelopedData (default: the "
                     "first cipher in the SMIMECapabilities that --cert-dir holds for every "
                     "recipient, else aes-256-cbc)")
        ->transform(CLI::IsMember({"aes-128-cbc", "aes-256-cbc", "aes-128-gcm", "aes-256-gcm"},
                                  CLI::ignore_case))
        ->each([&settings](const std::string &) { settings.cipher_given = true; });
    command->add_flag("--rsa-oaep", settings.rsa_oaep,
                      "RSAES-OAEP with SHA-256 for RSA recipients instead of PKCS#1 v1.5");
}

void add_trust_options(CLI::App *command, VerifyCommandOptions &options) {
    command->add_option("--at-time", options.at_time,
                        "time to validate the certificate path at: now, signing (the "
                        "signingTime attribute) or a UTC date such as 2013-11-02T20:28:04Z "
                        "(default: now)");
    command->add_option("--date-mismatch", options.date_mismatch,
                        "a Date header more than an hour from signingTime: warn or fail "
                        "(default: warn)")
        ->check(CLI::IsMember({"warn", "fail"}));
    command->add_option("--crl-file", options.crl_files, "PEM or DER CRL file (repeatable)");
    command->add_option("--crl-dir", options.crl_dir,
                        "folder of CRL files (*.crl, *.pem, *.der, or *.rN from openssl rehash)");
    command->add_flag("--online", options.online,
                      "check revocation online: OCSP first, then CRL distribution points");
    command->add_option("--ocsp-url", options.ocsp_url,
                        "OCSP responder to ask instead of the one the certificate names "
                        "(http:// only)");
    command->add_option("--revocation", options.revocation,
                        "an unknown revocation status is a warning (soft) or a failure (hard) "
                        "(default: soft)")
        ->check(CLI::IsMember({"soft", "hard"}));
    command->add_option("--timeout", options.timeout_seconds,
                        "seconds each online request may take (default: 5)")
        ->check(CLI::Range(1, 300));
    command->add_option("--cache-dir", options.cache_dir,
                        "folder for OCSP responses and CRLs fetched online (default: "
                        "$XDG_CACHE_HOME/p11smime/revocation)");
}

void add_verify_checks(CLI::App *command, VerifyCommandOptions &options) {
    command->add_option("--ca-file", options.ca_file, "PEM file of trusted CA certificates");
    command->add_option("--ca-path", options.ca_path,
                        "folder of trusted CA certificates, hashed by 'openssl rehash'");
    command->add_flag("--no-system-ca", options.no_system_ca, "do not trust the system CA store");
    command->add_flag("--no-sender-check", options.no_sender_check,
                      "do not require the From address in the signer certificate");
    command->add_option("--signer-cert", options.signer_certs,
                        "signer certificate file, for signatures that do not include it");
    add_trust_options(command, options);
    command->add_flag("--allow-sha1", options.allow_sha1,
                      "accept SHA-1 signatures, with a warning (default: reject them)");
}

void add_batch_options(CLI::App *command, BatchSettings &batch, const std::string &outputs) {
    command->add_option("files", batch.files,
                        "messages to process in one batch, with one login (instead of --in)");
    command->add_option("--out-dir", batch.out_dir,
                        "folder for the " + outputs + " of a batch, each named like its input");
    command->add_option("--jobs", batch.jobs,
                        "worker threads for a batch (default: the number of cores, at most " +
                            std::to_string(max_jobs) + ")")
        ->check(CLI::Range(1u, max_jobs));
    command->add_option("--max-size", batch.max_size_mib,
                        "largest input message in MiB; 0 for no limit, for large messages in "
                        "files, which are read in pieces (default: 64)");
}

// Adds --token-wait to the commands whose batches use a token key.
void add_token_wait_option(CLI::App *command, BatchSettings &batch) {
    command->add_option("--token-wait", batch.token_wait_seconds,
                        "seconds a batch waits for a lost token to come back, reopening it and "
                        "logging in again; 0 fails the remaining files at once (default: " +
                            std::to_string(default_token_wait_seconds) + ")")
        ->check(CLI::Range(0u, 86400u));
}

CLI::App *add_list(CLI::App &app, ListOptions &options) {
    CLI::App *list = app.add_subcommand("list", "List slots, tokens, certificates and keys with "
                                                "their PKCS#11 URIs");
    add_token_options(list, options.common);
    list->add_flag("--login", options.login,
                   "log in first, so private keys that need a login are listed");
    list->add_flag("--json", options.json, "print JSON instead of text");
    return list;
}

CLI::App *add_sign(CLI::App &app, SignCommandOptions &options) {
    CLI::App *sign = app.add_subcommand("sign", "Sign a message with a private key on a token");
    sign->add_option("--key", options.key, "PKCS#11 URI of the private key")->required();
    sign->add_option("--cert", options.cert,
                     "signer certificate: a PKCS#11 URI or a PEM/DER file (default: the token "
                     "certificate with the key's CKA_ID)");
    sign->add_option("--chain", options.chain, "PEM file of intermediate certificates to include");
    sign->add_flag("--opaque", options.opaque,
                   "write application/pkcs7-mime signed-data instead of multipart/signed");
    sign->add_option("--digest", options.digest,
                     "digest: sha256, sha384 or sha512 (default: sha256, or the curve's size)")
        ->transform(CLI::IsMember({"sha256", "sha384", "sha512"}, CLI::ignore_case));
    sign->add_flag("--rsa-pss", options.rsa_pss, "sign with RSASSA-PSS instead of PKCS#1 v1.5");
    sign->add_option("--in", options.in, "message to sign (default: standard input)");
    sign->add_option("--out", options.out, "signed message (default: standard output)");
    add_token_options(sign, options.common);
    add_encryption_options(sign, options.encryption, "--encrypt-to");
    add_batch_options(sign, options.batch, "signed messages");
    add_token_wait_option(sign, options.batch);
    return sign;
}

CLI::App *add_encrypt(CLI::App &app, EncryptCommandOptions &options) {
    CLI::App *encrypt = app.add_subcommand("encrypt", "Encrypt a message to its recipients");
    add_encryption_options(encrypt, options.encryption, "--recipient");
    add_token_options(encrypt, options.common);
    encrypt->add_flag("--json", options.json,
                      "print a JSON report of the recipients on standard error");
    encrypt->add_option("--in", options.in, "message to encrypt (default: standard input)");
    encrypt->add_option("--out", options.out, "encrypted message (default: standard output)");
    add_batch_options(encrypt, options.batch, "encrypted messages");
    return encrypt;
}

CLI::App *add_decrypt(CLI::App &app, DecryptCommandOptions &options) {
    CLI::App *decrypt = app.add_subcommand(
        "decrypt", "Decrypt a message with a key on a token and verify any signature inside");
    decrypt->add_option("--key", options.key,
                        "PKCS#11 URI of the private key (default: the token key whose "
                        "certificate is a recipient)");
    add_token_options(decrypt, options.common);
    decrypt->add_flag("--no-verify", options.no_verify,
                      "do not verify signatures; output stops at the first signed layer");
    add_verify_checks(decrypt, options.verify);
    decrypt->add_flag("--json", options.verify.json,
                      "print the report as JSON on standard output");
    decrypt->add_option("--in", options.verify.in, "encrypted message (default: standard input)");
    decrypt->add_option("--out", options.verify.out,
                        "decrypted message (default: standard output)");
    add_batch_options(decrypt, options.batch, "decrypted messages");
    add_token_wait_option(decrypt, options.batch);
    return decrypt;
}

CLI::App *add_verify(CLI::App &app, VerifyCommandOptions &options) {
    CLI::App *verify = app.add_subcommand("verify", "Verify a signed message");
    add_verify_checks(verify, options);
    verify->add_flag("--json", options.json, "print the report as JSON on standard output");
    verify->add_option("--learn", options.learn_dir,
                       "store the certificate and SMIMECapabilities of a signer that verified "
                       "in this folder, for encrypt --cert-dir");
    verify->add_option("--in", options.in, "signed message (default: standard input)");
    verify->add_option("--out", options.out, "file for the verified content");
    add_batch_options(verify, options.batch, "verified contents");
    return verify;
}

CLI::App *add_certs(CLI::App &app, CertsCommandOptions &options) {
    CLI::App *certs = app.add_subcommand(
        "certs", "List, show or remove the certificates in a --cert-dir folder");
    certs->add_option("action", options.action, "list, show EMAIL or remove EMAIL")
        ->required()
        ->check(CLI::IsMember({"list", "show", "remove"}));
    certs->add_option("email", options.email, "email address, for show and remove");
    certs->add_option("--cert-dir", options.cert_dir, "certificate folder")->required();
    certs->add_flag("--json", options.json, "print JSON instead of text");
    return certs;
}

// The subcommands and their parsed options.
struct Commands {
    ListOptions list_options;
    SignCommandOptions sign_options;
    VerifyCommandOptions verify_options;
    EncryptCommandOptions encrypt_options;
    DecryptCommandOptions decrypt_options;
    CertsCommandOptions certs_options;
    CLI::App *list = nullptr;
    CLI::App *sign = nullptr;
    CLI::App *verify = nullptr;
    CLI::App *encrypt = nullptr;
    CLI::App *decrypt = nullptr;
    CLI::App *certs = nullptr;
    KeygenCommandOptions keygen_options;
    CsrCommandOptions csr_options;
    ImportCommandOptions import_options;
    ReadersCommandOptions readers_options;
    DoctorCommandOptions doctor_options;
    CLI::App *keygen = nullptr;
    CLI::App *csr = nullptr;
    CLI::App *import = nullptr;
    CLI::App *readers = nullptr;
    CLI::App *doctor = nullptr;
};

void add_commands(CLI::App &app, Commands &commands) {
    commands.list = add_list(app, commands.list_options);
    commands.sign = add_sign(app, commands.sign_options);
    commands.verify = add_verify(app, commands.verify_options);
    commands.encrypt = add_encrypt(app, commands.encrypt_options);
    commands.decrypt = add_decrypt(app, commands.decrypt_options);
    commands.certs = add_certs(app, commands.certs_options);
    commands.keygen = add_keygen(app, commands.keygen_options);
    add_token_options(commands.keygen, commands.keygen_options.common);
    commands.csr = add_csr(app, commands.csr_options);
    add_token_options(commands.csr, commands.csr_options.common);
    commands.import = add_import(app, commands.import_options);
    add_token_options(commands.import, commands.import_options.common);
    commands.readers = add_readers(app, commands.readers_options);
    commands.doctor = add_doctor(app, commands.doctor_options);
    add_token_options(commands.doctor, commands.doctor_options.common);
}

int run_command(const Commands &commands) {
    if (commands.list->parsed())
        return run_list(commands.list_options);
    if (commands.sign->parsed())
        return run_sign(commands.sign_options);
    if (commands.verify->parsed())
        return run_verify(commands.verify_options);
    if (commands.encrypt->parsed())
        return run_encrypt(commands.encrypt_options);
    if (commands.decrypt->parsed())
        return run_decrypt(commands.decrypt_options);
    if (commands.certs->parsed())
        return run_certs(commands.certs_options);
    if (commands.keygen->parsed())
        return run_keygen(commands.keygen_options);
    if (commands.csr->parsed())
        return run_csr(commands.csr_options);
    if (commands.import->parsed())
        return run_import(commands.import_options);
    if (commands.readers->parsed())
        return run_readers(commands.readers_options);
    if (commands.doctor->parsed())
        return run_doctor(commands.doctor_options);
    throw Error("no command given", "see 'p11smime --help'");
}

// Returns the error's hint, or for a token that went away mid-operation a hint that says so.
std::string hint_for(const Error &error) {
    if (!error.hint().empty())
        return error.hint();
    std::optional<unsigned long> rv = pkcs11_return_value(error);
    if (rv && is_token_lost(*rv))
        return "the token was removed, reset or stopped answering (" + ckr_name(*rv) +
               "); check it and run the command again";
    return {};
}

void print_error(const Error &error) {
    std::cerr << "p11smime: error: " << error.what() << "\n";
    if (std::string hint = hint_for(error); !hint.empty())
        std::cerr << "p11smime: hint: " << hint << "\n";
}

} // namespace

int main(int argc, char **argv) {
    CLI::App app("p11smime: sign, verify, encrypt and decrypt S/MIME mail with keys on a "
                 "PKCS#11 token.\nExit status: 0 success, 1 a signature or policy check failed, "
                 "2 a usage, input or environment error.");
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("p11smime ") + P11SMIME_VERSION);
    // Listed for --help only: sendmail passes sendmail's own options through, which CLI11
    // cannot do, so it is parsed by run_sendmail_command below.
    app.add_subcommand("sendmail", "Sign (and encrypt) a message, then pass it to sendmail; "
                                   "see 'p11smime sendmail --help'");
    if (argc > 1 && std::string(argv[1]) == "sendmail") {
        try {
            return run_sendmail_command(std::vector<std::string>(argv + 2, argv + argc));
        } catch (const Error &error) {
            print_error(error);
            return exit_usage;
        } catch (const std::exception &error) {
            std::cerr << "p11smime: error: " << error.what() << "\n";
            return exit_usage;
        }
    }
    app.failure_message([](const CLI::App *, const CLI::Error &error) {
        return "p11smime: error: " + std::string(error.what()) +
               "\np11smime: hint: see 'p11smime --help' and 'p11smime COMMAND --help'\n";
    });

    Commands commands;
    add_commands(app, commands);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &error) {
        int status = app.exit(error);
        return status == 0 ? 0 : exit_usage;
    }

    try {
        int status = run_command(commands);
        std::cout.flush();
        if (!std::cout)
            throw Error("cannot write to standard output");
        return status;
    } catch (const Error &error) {
        print_error(error);
        return exit_usage;
    } catch (const std::exception &error) {
        std::cerr << "p11smime: error: " << error.what() << "\n";
        return exit_usage;
    }
}
