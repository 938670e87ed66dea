#include "cli/commands.h"

#include <iostream>

#include <openssl/pem.h>

#include "cli/io.h"
#include "cli/report.h"
#include "cms/sign.h"
#include "cms/verify.h"
#include "common/error.h"
#include "token/token.h"

namespace p11smime::cli {

constexpr int exit_success = 0;
constexpr int exit_check_failed = 1;

void warn(const std::string &message) { std::cerr << "p11smime: warning: " << message << "\n"; }

namespace {

TokenOptions token_options(const CommonOptions &common) {
    TokenOptions options;
    options.module = common.module;
    options.pin_file = common.pin_file;
    if (terminal_available())
        options.prompt_pin = prompt_pin_on_tty;
    options.warn = warn;
    return options;
}

// Reads every certificate in a PEM file, or the one certificate of a DER file.
X509StackPtr read_certificates(const std::string &path) {
    X509StackPtr certificates(sk_X509_new_null());
    BioPtr bio(BIO_new_file(path.c_str(), "rb"));
    if (!bio)
        throw OpensslError("cannot open certificate file '" + path + "'");
    while (X509 *certificate = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
        sk_X509_push(certificates.get(), certificate);
    clear_openssl_errors();
    if (sk_X509_num(certificates.get()) == 0) {
        BIO_reset(bio.get());
        if (X509 *certificate = d2i_X509_bio(bio.get(), nullptr))
            sk_X509_push(certificates.get(), certificate);
    }
    if (sk_X509_num(certificates.get()) == 0)
        throw OpensslError("no PEM or DER certificate in '" + path + "'");
    return certificates;
}

X509Ptr read_certificate(const std::string &path) {
    X509StackPtr certificates = read_certificates(path);
    return X509Ptr(sk_X509_shift(certificates.get()));
}

void append_chain(STACK_OF(X509) * chain, const std::optional<std::string> &path) {
    if (!path)
        return;
    X509StackPtr extra = read_certificates(*path);
    while (X509 *certificate = sk_X509_shift(extra.get()))
        sk_X509_push(chain, certificate);
}

} // namespace

int run_list(const ListOptions &options) {
    TokenOptions token = token_options(options.common);
    ModuleInfo module = list_module(choose_module(nullptr, token), token, options.login);
    if (options.json)
        print_module_json(std::cout, module);
    else
        print_module_text(std::cout, module);
    return exit_success;
}

int run_sign(const SignCommandOptions &options) {
    std::string message = read_input(options.in);
    Pkcs11Uri key_uri = Pkcs11Uri::parse(options.key);
    std::optional<Pkcs11Uri> certificate_uri;
    X509Ptr certificate_file;
    if (options.cert && is_pkcs11_uri(*options.cert))
        certificate_uri = Pkcs11Uri::parse(*options.cert);
    else if (options.cert)
        certificate_file = read_certificate(*options.cert);

    TokenKey key = open_token_key(key_uri, certificate_uri, token_options(options.common),
                                  !certificate_file);
    X509 *certificate = certificate_file ? certificate_file.get() : key.certificate();
    if (X509_check_private_key(certificate, key.key()) != 1)
        throw OpensslError("the certificate does not belong to key '" + options.key + "'",
                           "pass the matching certificate with --cert");
    append_chain(key.chain(), options.chain);

    SignOptions sign;
    sign.key = key.key();
    sign.certificate = certificate;
    sign.chain = key.chain();
    sign.digest = options.digest;
    sign.rsa_pss = options.rsa_pss;
    sign.opaque = options.opaque;
    write_output(options.out, sign_message(message, sign));
    return exit_success;
}

int run_verify(const VerifyCommandOptions &options) {
    std::string message = read_input(options.in);
    VerifyOptions verify;
    verify.ca_file = options.ca_file;
    verify.ca_path = options.ca_path;
    verify.system_ca = !options.no_system_ca;
    verify.sender_check = !options.no_sender_check;
    verify.signer_certificate_files = options.signer_certs;

    VerifyResult result = verify_message(message, verify);
    if (options.json)
        print_verify_json(std::cout, result);
    else
        print_verify_text(std::cout, result);
    for (const auto &warning : result.warnings)
        warn(warning);

    if (!result.valid) {
        std::cerr << "p11smime: error: verification failed: " << result.failures.front() << "\n";
        return exit_check_failed;
    }
    if (options.out)
        write_output(options.out, result.content);
    return exit_success;
}

} // namespace p11smime::cli
