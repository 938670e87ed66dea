#include "cli/commands.h"

#include <dirent.h>

#include <cstdlib>
#include <iostream>
#include <map>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cli/io.h"
#include "cli/report.h"
#include "cli/trust.h"
#include "cms/decrypt.h"
#include "cms/encrypt.h"
#include "cms/mime.h"
#include "cms/sign.h"
#include "cms/verify.h"
#include "common/error.h"
#include "token/recovery.h"
#include "token/token.h"

namespace p11smime::cli {

constexpr int exit_success = 0;
constexpr int exit_check_failed = 1;

void warn(const std::string &message) { std::cerr << "p11smime: warning: " << message << "\n"; }

TokenOptions token_options(const CommonOptions &common) {
    if (common.module && common.module->empty())
        throw Error("--module is empty", "give the path of a PKCS#11 module, or leave it out");
    TokenOptions options;
    options.module = common.module;
    options.pin_file = common.pin_file;
    if (terminal_available())
        options.prompt_pin = prompt_pin_on_tty;
    options.warn = warn;
    return options;
}

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

namespace {

void append_chain(STACK_OF(X509) * chain, const std::optional<std::string> &path) {
    if (!path)
        return;
    X509StackPtr extra = read_certificates(*path);
    while (X509 *certificate = sk_X509_shift(extra.get()))
        sk_X509_push(chain, certificate);
}

std::string lowercase(std::string text) {
    for (auto &c : text)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
}

bool has_certificate_extension(const std::string &name) {
    for (const char *extension : {".pem", ".crt", ".cer", ".der"}) {
        size_t length = std::char_traits<char>::length(extension);
        if (name.size() > length && name.compare(name.size() - length, length, extension) == 0)
            return true;
    }
    return false;
}

} // namespace

std::multimap<std::string, X509Ptr> read_certificate_folder(const std::string &folder) {
    std::unique_ptr<DIR, int (*)(DIR *)> directory(opendir(folder.c_str()), closedir);
    if (!directory)
        throw Error("cannot open certificate folder '" + folder + "'",
                    "check the path given to --cert-dir");
    std::multimap<std::string, X509Ptr> index;
    while (dirent *entry = readdir(directory.get())) {
        if (!has_certificate_extension(entry->d_name))
            continue;
        X509StackPtr certificates = read_certificates(folder + "/" + entry->d_name);
        while (X509 *certificate = sk_X509_shift(certificates.get())) {
            X509Ptr owned(certificate);
            STACK_OF(OPENSSL_STRING) *emails = X509_get1_email(certificate);
            for (int i = 0; i < sk_OPENSSL_STRING_num(emails); ++i) {
                X509_up_ref(certificate);
                index.emplace(lowercase(sk_OPENSSL_STRING_value(emails, i)),
                              X509Ptr(certificate));
            }
            X509_email_free(emails);
        }
    }
    return index;
}

namespace {

// Picks, for each address, the first certificate in the folder that passes the recipient
// checks; an address without one is an error naming it.
void add_folder_recipients(const std::string &folder, const std::string &message,
                           std::vector<X509Ptr> &recipients) {
    std::multimap<std::string, X509Ptr> index = read_certificate_folder(folder);
    for (const auto &address : recipient_addresses(message)) {
        auto range = index.equal_range(lowercase(address));
        X509 *chosen = nullptr;
        std::string last_problem = "no certificate for it";
        for (auto it = range.first; it != range.second && !chosen; ++it) {
            try {
                check_recipient_certificate(it->second.get(), address);
                chosen = it->second.get();
            } catch (const Error &error) {
                last_problem = error.what();
            }
        }
        if (!chosen)
            throw Error("recipient '" + address + "' has no usable certificate in '" + folder +
                            "': " + last_problem,
                        "add the recipient's certificate to the folder, or remove the address");
        X509_up_ref(chosen);
        recipients.emplace_back(chosen);
    }
}

std::vector<X509Ptr> resolve_recipients(const EncryptionSettings &settings,
                                        const TokenOptions &token, const std::string &message) {
    std::vector<X509Ptr> recipients;
    for (const auto &recipient : settings.recipients) {
        X509Ptr certificate = is_pkcs11_uri(recipient)
                                  ? read_token_certificate(Pkcs11Uri::parse(recipient), token)
                                  : read_certificate(recipient);
        check_recipient_certificate(certificate.get(), recipient);
        recipients.push_back(std::move(certificate));
    }
    if (settings.cert_dir)
        add_folder_recipients(*settings.cert_dir, message, recipients);
    return recipients;
}

std::string encrypt_to(const std::vector<X509Ptr> &recipients, const EncryptionSettings &settings,
                       const std::string &message) {
    EncryptOptions encrypt;
    for (const auto &certificate : recipients)
        encrypt.recipients.push_back(certificate.get());
    encrypt.cipher = content_cipher(recipients, settings);
    encrypt.rsa_oaep = settings.rsa_oaep;
    return encrypt_message(message, encrypt);
}

bool wants_encryption(const EncryptionSettings &settings) {
    return !settings.recipients.empty() || settings.cert_dir;
}

VerifyOptions verify_options(const VerifyCommandOptions &options) {
    VerifyOptions verify;
    verify.ca_file = options.ca_file;
    verify.ca_path = options.ca_path;
    verify.system_ca = !options.no_system_ca;
    verify.sender_check = !options.no_sender_check;
    verify.signer_certificate_files = options.signer_certs;
    verify.allow_sha1 = options.allow_sha1;
    add_trust_settings(options, verify);
    return verify;
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

// Warns about a signature that its readers will reject: an expired or not yet valid
// certificate, or a From address that the certificate does not carry.
void warn_about_signer(X509 *certificate, const std::string &message) {
    if (X509_cmp_current_time(X509_get0_notAfter(certificate)) < 0)
        warn("the signer certificate has expired, so verifiers will reject this signature");
    else if (X509_cmp_current_time(X509_get0_notBefore(certificate)) > 0)
        warn("the signer certificate is not valid yet, so verifiers will reject this signature");

    std::string from = split_message(message).from_address;
    if (!from.empty() && X509_check_email(certificate, from.c_str(), from.size(), 0) != 1)
        warn("From address '" + from + "' is not in the signer certificate, so verifiers "
             "that check the sender will reject this signature");
}

int run_sign(const SignCommandOptions &options) {
    std::string message = read_input(options.in);
    split_message(message); // reject unusable input before a PIN try is spent on it
    check_output_folder(options.out);
    Pkcs11Uri key_uri = Pkcs11Uri::parse(options.key);
    std::optional<Pkcs11Uri> certificate_uri;
    X509Ptr certificate_file;
    if (options.cert && is_pkcs11_uri(*options.cert))
        certificate_uri = Pkcs11Uri::parse(*options.cert);
    else if (options.cert)
        certificate_file = read_certificate(*options.cert);

    std::vector<X509Ptr> recipients;
    if (wants_encryption(options.encryption))
        recipients = resolve_recipients(options.encryption, token_options(options.common),
                                        message);

    TokenKey key = open_token_key(key_uri, certificate_uri, token_options(options.common),
                                  !certificate_file);
    X509 *certificate = certificate_file ? certificate_file.get() : key.certificate();
    if (X509_check_private_key(certificate, key.key()) != 1)
        throw OpensslError("the certificate does not belong to key '" + key_uri.to_string() + "'",
                           "pass the matching certificate with --cert");
    append_chain(key.chain(), options.chain);
    warn_about_signer(certificate, message);

    SignOptions sign;
    sign.key = key.key();
    sign.certificate = certificate;
    sign.chain = key.chain();
    sign.digest = options.digest;
    sign.rsa_pss = options.rsa_pss;
    sign.opaque = options.opaque;
    std::string signed_message = sign_message(message, sign);
    if (!wants_encryption(options.encryption)) {
        write_output(options.out, signed_message);
        return exit_success;
    }
    write_output(options.out, encrypt_to(recipients, options.encryption, signed_message));
    return exit_success;
}

int run_verify(const VerifyCommandOptions &options) {
    std::string message = read_input(options.in);
    check_output_folder(options.out);
    VerifyResult result = verify_message(message, verify_options(options));
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
    if (options.learn_dir)
        learn_signers(*options.learn_dir, result);
    if (options.out)
        write_output(options.out, result.content);
    return exit_success;
}

namespace {

void require_out_for_json(bool json, const std::optional<std::string> &out) {
    if (json && (!out || *out == "-"))
        throw Error("--json prints the report on standard output, where the message would go",
                    "add --out FILE");
}

std::string subject_text(X509 *certificate) {
    char text[256];
    X509_NAME_oneline(X509_get_subject_name(certificate), text, sizeof text);
    return text;
}

} // namespace

int run_encrypt(const EncryptCommandOptions &options) {
    require_out_for_json(options.json, options.out);
    std::string message = read_input(options.in);
    check_output_folder(options.out);
    std::vector<X509Ptr> recipients =
        resolve_recipients(options.encryption, token_options(options.common), message);
    write_output(options.out, encrypt_to(recipients, options.encryption, message));

    if (options.json)
        print_encrypt_json(std::cout, recipients, content_cipher(recipients, options.encryption),
                           options.encryption.rsa_oaep);
    return exit_success;
}

namespace {

std::string joined_recipients(const std::vector<std::string> &recipients) {
    std::string text;
    for (const auto &recipient : recipients)
        text += (text.empty() ? "" : "; ") + recipient;
    return text.empty() ? "(no recipients)" : text;
}

// Opens the decryption key on first use and keeps it for the layers that follow.
class TokenKeyLookup {
  public:
    TokenKeyLookup(const DecryptCommandOptions &options)
        : options_(options), token_(token_options(options.common)) {}

    DecryptionKey operator()(const std::function<bool(X509 *)> &is_recipient,
                             const std::vector<std::string> &recipients) {
        for (const auto &key : keys_)
            if (is_recipient(key.certificate()))
                return {key.key(), key.certificate()};
        if (options_.key)
            return open_named_key(is_recipient, recipients);
        std::optional<TokenKey> key = open_recipient_key(is_recipient, token_);
        if (!key)
            throw Error("no token key is a recipient of this message, which is encrypted to: " +
                            joined_recipients(recipients),
                        "insert the token that holds one of these keys, or name it with --key");
        keys_.push_back(std::move(*key));
        return {keys_.back().key(), keys_.back().certificate()};
    }

    // Throws Pkcs11Error when the token of a key that was used no longer answers, so that a
    // token pulled out during decryption is reported as such. A token that answers says
    // nothing about the ciphertext, so this adds no padding oracle.
    void check_tokens() const {
        for (const auto &key : keys_)
            if (unsigned long rv = key.probe(); is_token_lost(rv))
                throw Pkcs11Error(rv, "decrypting with the key of " +
                                          subject_text(key.certificate()),
                                  "", "check the token and run the command again");
    }

  private:
    DecryptionKey open_named_key(const std::function<bool(X509 *)> &is_recipient,
                                 const std::vector<std::string> &recipients) {
        TokenKey key = open_token_key(Pkcs11Uri::parse(*options_.key), std::nullopt, token_);
        if (!is_recipient(key.certificate()))
            throw Error("key '" + without_pin_value(*options_.key) + "' (" +
                            subject_text(key.certificate()) +
                            ") is not a recipient of this message, which is encrypted to: " +
                            joined_recipients(recipients),
                        "name the key of one of these recipients, or leave out --key");
        keys_.push_back(std::move(key));
        return {keys_.back().key(), keys_.back().certificate()};
    }

    const DecryptCommandOptions &options_;
    TokenOptions token_;
    std::vector<TokenKey> keys_;
};

} // namespace

int run_decrypt(const DecryptCommandOptions &options) {
    require_out_for_json(options.verify.json, options.verify.out);
    std::string message = read_input(options.verify.in);
    check_output_folder(options.verify.out);
    TokenKeyLookup lookup(options);
    DecryptResult result = decrypt_message(
        message, std::ref(lookup), verify_options(options.verify), !options.no_verify);

    if (options.verify.json)
        print_decrypt_json(std::cout, result);
    else
        print_decrypt_text(std::cerr, result);

    if (!result.valid) {
        lookup.check_tokens();
        if (const char *debug = std::getenv("P11SMIME_DEBUG"); debug && *debug &&
                                                               !result.detail.empty())
            std::cerr << "p11smime: debug: " << result.detail << "\n";
        std::cerr << "p11smime: error: " << result.failures.front() << "\n";
        return exit_check_failed;
    }
    write_output(options.verify.out, result.content);
    return exit_success;
}

} // namespace p11smime::cli
