#include "cli/git.h"

#include <strings.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <iostream>

#include <openssl/pem.h>

#include "cli/io.h"
#include "cli/process.h"
#include "cms/sign.h"
#include "cms/verify.h"
#include "common/x509_text.h"
#include "common/error.h"
#include "common/ossl.h"
#include "token/token.h"

namespace p11smime::cli {
namespace {

constexpr int exit_success = 0;
constexpr int exit_check_failed = 1;

// The PEM label of gpgsm's armor, and the one git looks for to pick the X.509 format.
constexpr const char *armor_label = "SIGNED MESSAGE";

// Writes gpgsm status lines, "[GNUPG:] KEYWORD ARGUMENTS", to the file descriptor that git
// names with --status-fd.
class StatusWriter {
  public:
    explicit StatusWriter(int fd) : fd_(fd) {}

    void write_line(const std::string &line) const {
        if (fd_ < 0)
            return;
        std::string text = "[GNUPG:] " + line + "\n";
        size_t written = 0;
        while (written < text.size()) {
            ssize_t count = write(fd_, text.data() + written, text.size() - written);
            if (count < 0 && errno == EINTR)
                continue;
            if (count < 0)
                throw Error("cannot write status to file descriptor " + std::to_string(fd_) +
                            ": " + std::strerror(errno));
            written += static_cast<size_t>(count);
        }
    }

  private:
    int fd_;
};

std::optional<std::string> environment(const char *name) {
    const char *value = std::getenv(name);
    if (!value || !*value)
        return std::nullopt;
    return std::string(value);
}

// Returns `git config --type=TYPE --get KEY` without its final newline, or nothing when the
// key is unset or git is not available.
std::optional<std::string> git_config(const std::string &key, const std::string &type) {
    std::optional<std::string> value =
        command_output({"git", "config", "--type=" + type, "--get", key});
    if (!value)
        return std::nullopt;
    while (!value->empty() && (value->back() == '\n' || value->back() == '\r'))
        value->pop_back();
    if (value->empty())
        return std::nullopt;
    return value;
}

std::optional<std::string> setting(const char *variable, const std::string &key,
                                   const std::string &type = "path") {
    if (auto value = environment(variable))
        return value;
    return git_config(key, type);
}

bool parse_boolean(const std::string &value, const std::string &name) {
    for (const char *word : {"true", "yes", "on", "1"})
        if (strcasecmp(value.c_str(), word) == 0)
            return true;
    for (const char *word : {"false", "no", "off", "0"})
        if (strcasecmp(value.c_str(), word) == 0)
            return false;
    throw Error("invalid boolean '" + value + "' in " + name, "use true or false");
}

} // namespace

GitSettings read_git_settings() {
    GitSettings settings;
    // P11SMIME_MODULE is read by the token layer itself, after the --module value.
    if (!environment("P11SMIME_MODULE"))
        settings.module = git_config("p11smime.module", "path");
    settings.pin_file = setting("P11SMIME_PIN_FILE", "p11smime.pinFile");
    settings.ca_file = setting("P11SMIME_CA_FILE", "p11smime.caFile");
    settings.ca_path = setting("P11SMIME_CA_PATH", "p11smime.caPath");
    if (auto value = setting("P11SMIME_SYSTEM_CA", "p11smime.systemCa", "bool"))
        settings.system_ca = parse_boolean(*value, "P11SMIME_SYSTEM_CA or p11smime.systemCa");
    return settings;
}

namespace {

TokenOptions token_options(const GitSettings &settings) {
    TokenOptions options;
    options.module = settings.module;
    options.pin_file = settings.pin_file;
    if (terminal_available())
        options.prompt_pin = prompt_pin_on_tty;
    options.warn = [](const std::string &message) {
        std::cerr << "p11smime: warning: " << message << "\n";
    };
    return options;
}

// libgcrypt's algorithm numbers, which gpgsm prints in SIG_CREATED and VALIDSIG.
int gcrypt_public_key_algorithm(const std::string &key_type) {
    if (key_type == "RSA" || key_type == "RSA-PSS")
        return 1;
    if (key_type == "EC")
        return 301; // GCRY_PK_ECDSA
    if (key_type == "ED25519" || key_type == "ED448")
        return 303; // GCRY_PK_EDDSA
    return 0;
}

int gcrypt_digest_algorithm(const std::string &digest) {
    if (digest == "sha1")
        return 2;
    if (digest == "sha256")
        return 8;
    if (digest == "sha384")
        return 9;
    if (digest == "sha512")
        return 10;
    if (digest == "sha224")
        return 11;
    return 0;
}

bool valid_now(X509 *certificate) {
    return X509_cmp_current_time(X509_get0_notBefore(certificate)) < 0 &&
           X509_cmp_current_time(X509_get0_notAfter(certificate)) > 0;
}

// Returns the address of "Name <address>", or key itself when it is a bare address.
std::optional<std::string> email_in(const std::string &key) {
    size_t open = key.rfind('<');
    size_t close = key.rfind('>');
    if (open != std::string::npos && close != std::string::npos && open < close)
        return key.substr(open + 1, close - open - 1);
    if (key.find('@') != std::string::npos && key.find(' ') == std::string::npos)
        return key;
    return std::nullopt;
}

// Returns the SHA-1 fingerprint in key ("0x" prefix optional) in uppercase, as gpgsm takes it.
std::optional<std::string> fingerprint_in(const std::string &key) {
    std::string hex = key.rfind("0x", 0) == 0 || key.rfind("0X", 0) == 0 ? key.substr(2) : key;
    if (hex.size() != 40)
        return std::nullopt;
    for (auto &c : hex) {
        if (!std::isxdigit(static_cast<unsigned char>(c)))
            return std::nullopt;
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return hex;
}

// Opens the signing key that git names with -u: a PKCS#11 URI, or else the token certificate
// with that SHA-1 fingerprint, or a certificate valid now with that email address. Git passes
// user.signingKey, or "Name <email>" from user.name and user.email when that is unset.
TokenKey open_signing_key(const std::string &key, const TokenOptions &token) {
    if (is_pkcs11_uri(key))
        return open_token_key(Pkcs11Uri::parse(key), std::nullopt, token);

    std::function<bool(X509 *)> wanted;
    std::string description;
    if (auto fingerprint = fingerprint_in(key)) {
        wanted = [fingerprint](X509 *certificate) {
            return certificate_fingerprint(certificate) == *fingerprint;
        };
        description = "the SHA-1 fingerprint " + *fingerprint;
    } else if (auto email = email_in(key)) {
        wanted = [email](X509 *certificate) {
            return valid_now(certificate) && certificate_has_email(certificate, *email);
        };
        description = "the email address " + *email + " and is valid now";
    } else {
        throw Error("cannot tell which key to sign with from '" + key + "'",
                    "set user.signingKey to a pkcs11: URI or a certificate fingerprint, or "
                    "user.email to the certificate's email address");
    }

    std::optional<TokenKey> found = open_key_by_certificate(wanted, token);
    if (!found)
        throw Error("no token certificate has " + description,
                    "run 'p11smime list' to see the certificates, then set user.signingKey "
                    "to the key's pkcs11: URI");
    return std::move(*found);
}

std::string armored(const std::string &der) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio(bio.get(), armor_label, "",
                              reinterpret_cast<const unsigned char *>(der.data()),
                              static_cast<long>(der.size())) <= 0)
        throw OpensslError("cannot armor the signature");
    return memory_bio_text(bio.get());
}

// Reads a detached signature: PEM with the label "SIGNED MESSAGE", "CMS" or "PKCS7", or DER.
std::string read_signature(const std::string &path) {
    std::string bytes = read_input(path);
    if (bytes.find("-----BEGIN ") == std::string::npos)
        return bytes;

    BioPtr bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
    char *name = nullptr;
    char *header = nullptr;
    unsigned char *data = nullptr;
    long length = 0;
    if (!bio || PEM_read_bio(bio.get(), &name, &header, &data, &length) != 1)
        throw OpensslError("cannot read the PEM armor of signature file '" + path + "'");
    std::string label = name;
    std::string der(reinterpret_cast<char *>(data), static_cast<size_t>(length));
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    if (label != armor_label && label != "CMS" && label != "PKCS7")
        throw Error("signature file '" + path + "' contains PEM '" + label +
                        "' instead of a CMS signature",
                    "expect -----BEGIN SIGNED MESSAGE-----, as gpgsm and p11smime-git write");
    return der;
}

// Formats seconds since 1970 in UTC with strftime's format, or returns "0" for 0, as gpgsm
// writes a missing time.
std::string utc_time(long long seconds, const char *format) {
    if (seconds == 0)
        return "0";
    time_t time = static_cast<time_t>(seconds);
    tm broken_down{};
    gmtime_r(&time, &broken_down);
    char text[32];
    strftime(text, sizeof text, format, &broken_down);
    return text;
}

} // namespace

int run_git_sign(const GitSignRequest &request, const GitSettings &settings) {
    std::string data = read_input(std::nullopt);
    TokenKey key = open_signing_key(request.key, token_options(settings));

    SignOptions options;
    options.key = key.key();
    options.certificate = key.certificate();
    options.chain = key.chain();
    std::string der = sign_detached(data, options);
    write_output(std::nullopt, request.armor ? armored(der) : der);

    std::string key_type = EVP_PKEY_get0_type_name(key.key()) ? EVP_PKEY_get0_type_name(key.key())
                                                               : "";
    StatusWriter(request.status_fd)
        .write_line("SIG_CREATED D " + std::to_string(gcrypt_public_key_algorithm(key_type)) +
                    " " + std::to_string(gcrypt_digest_algorithm(default_digest(key.key()))) +
                    " 00 " + utc_time(std::time(nullptr), "%Y%m%dT%H%M%S") + " " +
                    certificate_fingerprint(key.certificate()));
    return exit_success;
}

namespace {

void report_good_signature(const SignerReport &signer, const StatusWriter &status) {
    const std::string &fingerprint = signer.fingerprint_sha1;
    status.write_line("GOODSIG " + fingerprint + " " + signer.subject);
    status.write_line("VALIDSIG " + fingerprint + " " +
                      utc_time(signer.signing_time_unix, "%Y-%m-%d") + " " +
                      utc_time(signer.signing_time_unix, "%Y%m%dT%H%M%S") + " 0 0 0 " +
                      std::to_string(gcrypt_public_key_algorithm(signer.key_type)) + " " +
                      std::to_string(gcrypt_digest_algorithm(signer.digest)) + " 00");
    status.write_line(signer.certificate_valid ? "TRUST_FULLY 0 shell" : "TRUST_NEVER 0");

    std::cerr << "p11smime: Signature made "
              << (signer.signing_time.empty() ? "at an unknown time" : signer.signing_time)
              << " using certificate ID 0x" << fingerprint << "\n";
    std::cerr << "p11smime: Good signature from \"" << signer.subject << "\"\n";
    for (const auto &email : signer.emails)
        std::cerr << "p11smime:                aka \"" << email << "\"\n";
}

void report_signer(const SignerReport &signer, const StatusWriter &status) {
    if (signer.subject.empty()) {
        // gpg's ERRSIG reason 9 means that the public key is missing.
        status.write_line("ERRSIG - " + std::to_string(gcrypt_public_key_algorithm("")) + " " +
                          std::to_string(gcrypt_digest_algorithm(signer.digest)) + " 00 " +
                          std::to_string(signer.signing_time_unix) + " 9");
        return;
    }
    if (!signer.signature_valid) {
        status.write_line("BADSIG " + signer.fingerprint_sha1 + " " + signer.subject);
        std::cerr << "p11smime: BAD signature from \"" << signer.subject << "\"\n";
        return;
    }
    report_good_signature(signer, status);
}

} // namespace

int run_git_verify(const GitVerifyRequest &request, const GitSettings &settings) {
    std::string der = read_signature(request.signature_file);
    std::string data = read_input(request.data_file);
    VerifyOptions options;
    options.ca_file = settings.ca_file;
    options.ca_path = settings.ca_path;
    options.system_ca = settings.system_ca;

    VerifyResult result = verify_detached(data, der, options);
    StatusWriter status(request.status_fd);
    status.write_line("NEWSIG");
    for (const auto &signer : result.signers)
        report_signer(signer, status);

    for (const auto &failure : result.failures)
        std::cerr << "p11smime: error: " << failure << "\n";
    bool path_failed = false;
    for (const auto &signer : result.signers)
        path_failed |= signer.signature_valid && !signer.certificate_valid;
    if (path_failed && !options.ca_file && !options.ca_path)
        std::cerr << "p11smime: hint: name your CA file with P11SMIME_CA_FILE or "
                     "'git config p11smime.caFile FILE'\n";
    return result.valid ? exit_success : exit_check_failed;
}

} // namespace p11smime::cli
