// p11smime: sign and verify S/MIME mail with keys that stay on a PKCS#11 token.
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
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
    command->add_option("--cipher", settings.cipher,
                        "content cipher; the GCM ciphers give AuthEnvelopedData "
                        "(default: aes-256-cbc)")
        ->check(CLI::IsMember({"aes-128-cbc", "aes-256-cbc", "aes-128-gcm", "aes-256-gcm"}));
    command->add_flag("--rsa-oaep", settings.rsa_oaep,
                      "RSAES-OAEP with SHA-256 for RSA recipients instead of PKCS#1 v1.5");
}

void add_verify_checks(CLI::App *command, VerifyCommandOptions &options) {
    command->add_option("--ca-file", options.ca_file, "PEM file of trusted CA certificates");
    command->add_option("--ca-path", options.ca_path,
                        "folder of trusted CA certificates, hashed by 'openssl rehash'");
    command->add_flag("--no-system-ca", options.no_system_ca,
                      "do not trust the system CA store");
    command->add_flag("--no-sender-check", options.no_sender_check,
                      "do not require the From address in the signer certificate");
    command->add_option("--signer-cert", options.signer_certs,
                        "signer certificate file, for signatures that do not include it");
    command->add_flag("--allow-sha1", options.allow_sha1,
                      "accept SHA-1 signatures, with a warning (default: reject them)");
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
        ->check(CLI::IsMember({"sha256", "sha384", "sha512"}));
    sign->add_flag("--rsa-pss", options.rsa_pss, "sign with RSASSA-PSS instead of PKCS#1 v1.5");
    sign->add_option("--in", options.in, "message to sign (default: standard input)");
    sign->add_option("--out", options.out, "signed message (default: standard output)");
    add_token_options(sign, options.common);
    add_encryption_options(sign, options.encryption, "--encrypt-to");
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
    decrypt->add_flag("--json", options.verify.json, "print the report as JSON on standard output");
    decrypt->add_option("--in", options.verify.in, "encrypted message (default: standard input)");
    decrypt->add_option("--out", options.verify.out,
                        "decrypted message (default: standard output)");
    return decrypt;
}

CLI::App *add_verify(CLI::App &app, VerifyCommandOptions &options) {
    CLI::App *verify = app.add_subcommand("verify", "Verify a signed message");
    add_verify_checks(verify, options);
    verify->add_flag("--json", options.json, "print the report as JSON on standard output");
    verify->add_option("--in", options.in, "signed message (default: standard input)");
    verify->add_option("--out", options.out, "file for the verified content");
    return verify;
}

// Returns the error's hint, or for a token that went away mid-operation a hint that says so.
std::string hint_for(const Error &error) {
    if (!error.hint().empty())
        return error.hint();
    std::optional<unsigned long> rv = pkcs11_return_value(error);
    if (rv && is_token_lost(*rv))
        return "the token was removed or stopped answering (" + ckr_name(*rv) +
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
    CLI::App app("p11smime: sign, verify, encrypt and decrypt S/MIME mail with keys on a PKCS#11 token.\n"
                 "Exit status: 0 success, 1 a signature or policy check failed, 2 a usage, "
                 "input or environment error.");
    app.require_subcommand(1);
    app.failure_message([](const CLI::App *, const CLI::Error &error) {
        return "p11smime: error: " + std::string(error.what()) +
               "\np11smime: hint: see 'p11smime --help' and 'p11smime COMMAND --help'\n";
    });

    ListOptions list_options;
    SignCommandOptions sign_options;
    VerifyCommandOptions verify_options;
    EncryptCommandOptions encrypt_options;
    DecryptCommandOptions decrypt_options;
    CLI::App *list = add_list(app, list_options);
    CLI::App *sign = add_sign(app, sign_options);
    CLI::App *verify = add_verify(app, verify_options);
    CLI::App *encrypt = add_encrypt(app, encrypt_options);
    CLI::App *decrypt = add_decrypt(app, decrypt_options);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &error) {
        int status = app.exit(error);
        return status == 0 ? 0 : exit_usage;
    }

    try {
        if (list->parsed())
            return run_list(list_options);
        if (sign->parsed())
            return run_sign(sign_options);
        if (verify->parsed())
            return run_verify(verify_options);
        if (encrypt->parsed())
            return run_encrypt(encrypt_options);
        if (decrypt->parsed())
            return run_decrypt(decrypt_options);
    } catch (const Error &error) {
        print_error(error);
        return exit_usage;
    } catch (const std::exception &error) {
        std::cerr << "p11smime: error: " << error.what() << "\n";
        return exit_usage;
    }
    return exit_usage;
}
