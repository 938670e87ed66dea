#include "cms/cert_dir.h"

#include <dirent.h>
#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>
#include <openssl/pem.h>

#include "cms/validation_time.h"
#include "common/x509_text.h"
#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {
namespace {

using nlohmann::json;

// Content ciphers that p11smime encrypts with, by SMIMECapabilities OID (RFC 3565, RFC 5084).
struct SupportedCipher {
    const char *oid;
    const char *name;
};
constexpr SupportedCipher supported_ciphers[] = {
    {"2.16.840.1.101.3.4.1.46", "aes-256-gcm"},
    {"2.16.840.1.101.3.4.1.6", "aes-128-gcm"},
    {"2.16.840.1.101.3.4.1.42", "aes-256-cbc"},
    {"2.16.840.1.101.3.4.1.2", "aes-128-cbc"},
};

std::string lowercase(std::string text) {
    for (auto &c : text)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
}

bool ends_with(const std::string &text, const std::string &suffix) {
    return text.size() > suffix.size() &&
           text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_certificate_file(const std::string &name) {
    for (const char *extension : {".pem", ".crt", ".cer", ".der"})
        if (ends_with(name, extension))
            return true;
    return false;
}

std::string read_file(const std::string &path) {
    std::ifstream stream(path, std::ios::binary);
    std::ostringstream bytes;
    bytes << stream.rdbuf();
    return bytes.str();
}

void write_file_atomically(const std::string &path, const std::string &data) {
    std::string temporary = path + ".tmp-XXXXXX";
    int descriptor = mkstemp(temporary.data());
    bool written = descriptor >= 0 && ::write(descriptor, data.data(), data.size()) ==
                                          static_cast<ssize_t>(data.size());
    if (descriptor >= 0 && ::close(descriptor) != 0)
        written = false;
    if (written && std::rename(temporary.c_str(), path.c_str()) == 0)
        return;
    if (descriptor >= 0)
        std::remove(temporary.c_str());
    throw Error("cannot write '" + path + "'", "check that the certificate folder is writable");
}

std::vector<X509Ptr> read_certificates(const std::string &path) {
    std::vector<X509Ptr> certificates;
    BioPtr bio(BIO_new_file(path.c_str(), "rb"));
    if (!bio)
        throw OpensslError("cannot open certificate file '" + path + "'");
    while (X509 *certificate = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
        certificates.emplace_back(certificate);
    clear_openssl_errors();
    if (certificates.empty()) {
        BIO_reset(bio.get());
        if (X509 *certificate = d2i_X509_bio(bio.get(), nullptr))
            certificates.emplace_back(certificate);
    }
    if (certificates.empty())
        throw OpensslError("no PEM or DER certificate in '" + path + "'");
    return certificates;
}

std::string time_text(const ASN1_TIME *time) {
    std::optional<std::time_t> seconds = to_time_t(time);
    return seconds ? iso8601(*seconds) : "";
}

std::string der_of(X509 *certificate) {
    unsigned char *der = nullptr;
    int length = i2d_X509(certificate, &der);
    std::string bytes = length > 0 ? std::string(reinterpret_cast<char *>(der), length) : "";
    OPENSSL_free(der);
    return bytes;
}

std::string side_file_of(const std::string &certificate_file) {
    if (!ends_with(certificate_file, ".pem"))
        return {};
    return certificate_file.substr(0, certificate_file.size() - 4) + ".json";
}

std::optional<LearnedInfo> read_side_file(const std::string &path) {
    if (path.empty() || access(path.c_str(), R_OK) != 0)
        return std::nullopt;
    json value = json::parse(read_file(path), nullptr, false);
    if (!value.is_object())
        return std::nullopt;
    LearnedInfo info;
    info.email = value.value("email", "");
    info.fingerprint = value.value("fingerprint", "");
    info.capabilities = value.value("capabilities", std::vector<std::string>{});
    info.signing_time = value.value("signing_time", "");
    info.learned_at = value.value("learned_at", "");
    return info;
}

void write_side_file(const std::string &path, const LearnedInfo &info) {
    json value = {{"email", info.email},
                  {"fingerprint", info.fingerprint},
                  {"capabilities", info.capabilities},
                  {"signing_time", info.signing_time},
                  {"learned_at", info.learned_at}};
    write_file_atomically(path, value.dump(2) + "\n");
}

FolderCertificate describe(X509 *certificate, const std::string &file) {
    FolderCertificate entry;
    entry.file = file;
    entry.subject = name_text(X509_get_subject_name(certificate));
    entry.issuer = name_text(X509_get_issuer_name(certificate));
    entry.serial = serial_hex(certificate);
    entry.not_before = time_text(X509_get0_notBefore(certificate));
    entry.not_after = time_text(X509_get0_notAfter(certificate));
    entry.fingerprint = certificate_fingerprint(certificate);
    entry.emails = certificate_emails(certificate);
    entry.der = der_of(certificate);
    std::optional<LearnedInfo> learned = read_side_file(side_file_of(file));
    if (learned && learned->fingerprint == entry.fingerprint)
        entry.learned = learned;
    return entry;
}

std::vector<std::string> certificate_files(const std::string &folder) {
    std::unique_ptr<DIR, int (*)(DIR *)> directory(opendir(folder.c_str()), closedir);
    if (!directory)
        throw Error("cannot open certificate folder '" + folder + "'",
                    "check the path given to --cert-dir");
    std::vector<std::string> files;
    while (dirent *entry = readdir(directory.get()))
        if (entry->d_name[0] != '.' && is_certificate_file(entry->d_name))
            files.push_back(folder + "/" + entry->d_name);
    std::sort(files.begin(), files.end());
    return files;
}

// Returns the file name stem for email: the address in lowercase when it has only letters,
// digits and ".@+-_", else a SHA-256 of it, so that no address can name a path.
std::string file_stem(const std::string &email) {
    std::string stem = lowercase(email);
    if (!stem.empty() && stem[0] != '.' &&
        stem.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.@+-_") == std::string::npos)
        return stem;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(stem.data(), stem.size(), digest, &length, EVP_sha256(), nullptr);
    static const char digits[] = "0123456789abcdef";
    std::string hex = "address-";
    for (unsigned int i = 0; i < length; ++i) {
        hex += digits[digest[i] >> 4];
        hex += digits[digest[i] & 0xf];
    }
    return hex;
}

bool valid_now(X509 *certificate) {
    return X509_cmp_current_time(X509_get0_notBefore(certificate)) < 0 &&
           X509_cmp_current_time(X509_get0_notAfter(certificate)) > 0;
}

std::string pem_of(X509 *certificate) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509(bio.get(), certificate);
    return memory_bio_text(bio.get());
}

// Decides whether a stored certificate gives way to a new one, by the rules that
// learn_certificate documents.
LearnResult compare_with_stored(X509 *stored, const std::optional<LearnedInfo> &stored_info,
                                X509 *certificate, const std::string &signing_time) {
    LearnResult result;
    if (certificate_fingerprint(stored) == certificate_fingerprint(certificate)) {
        bool older = stored_info && signing_time < stored_info->signing_time;
        result.outcome = older ? LearnResult::Outcome::kept : LearnResult::Outcome::updated;
        if (older)
            result.reason = "the capabilities of a newer message are stored";
        return result;
    }
    if (ASN1_TIME_compare(X509_get0_notBefore(certificate), X509_get0_notBefore(stored)) <= 0) {
        result.reason = "the stored certificate is as new or newer (notBefore " +
                        time_text(X509_get0_notBefore(stored)) + ")";
        return result;
    }
    result.outcome = LearnResult::Outcome::replaced;
    return result;
}

} // namespace

std::string certificate_fingerprint(X509 *certificate) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    X509_digest(certificate, EVP_sha256(), digest, &length);
    static const char digits[] = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < length; ++i) {
        hex += digits[digest[i] >> 4];
        hex += digits[digest[i] & 0xf];
    }
    return hex;
}

std::vector<FolderCertificate> read_certificate_folder_entries(const std::string &folder) {
    std::vector<FolderCertificate> entries;
    for (const auto &file : certificate_files(folder))
        for (const auto &certificate : read_certificates(file))
            entries.push_back(describe(certificate.get(), file));
    return entries;
}

LearnResult learn_certificate(const std::string &folder, const std::string &email,
                              const std::string &der,
                              const std::vector<std::string> &capabilities,
                              const std::string &signing_time) {
    const auto *bytes = reinterpret_cast<const unsigned char *>(der.data());
    X509Ptr certificate(d2i_X509(nullptr, &bytes, static_cast<long>(der.size())));
    if (!certificate)
        throw OpensslError("cannot read the signer certificate to learn it");
    std::string stem = folder + "/" + file_stem(email);
    LearnResult result;
    result.file = stem + ".pem";
    if (!valid_now(certificate.get())) {
        result.reason = "the certificate is not valid now";
        return result;
    }

    std::error_code error;
    std::filesystem::create_directories(folder, error);
    if (error)
        throw Error("cannot create certificate folder '" + folder + "': " + error.message());
    result.outcome = LearnResult::Outcome::added;
    if (access(result.file.c_str(), F_OK) == 0) {
        std::vector<X509Ptr> stored = read_certificates(result.file);
        LearnResult decision = compare_with_stored(stored.front().get(),
                                                   read_side_file(stem + ".json"),
                                                   certificate.get(), signing_time);
        result.outcome = decision.outcome;
        result.reason = decision.reason;
    }
    if (result.outcome == LearnResult::Outcome::kept)
        return result;

    LearnedInfo info{lowercase(email), certificate_fingerprint(certificate.get()), capabilities,
                     signing_time, iso8601(std::time(nullptr))};
    if (result.outcome != LearnResult::Outcome::updated)
        write_file_atomically(result.file, pem_of(certificate.get()));
    write_side_file(stem + ".json", info);
    return result;
}

std::vector<std::string> remove_certificates(const std::string &folder,
                                             const std::string &email) {
    std::vector<std::string> removed;
    for (const auto &file : certificate_files(folder)) {
        std::vector<X509Ptr> certificates = read_certificates(file);
        size_t matching = 0;
        for (const auto &certificate : certificates)
            matching += certificate_has_email(certificate.get(), email) ? 1 : 0;
        if (matching == 0)
            continue;
        if (matching != certificates.size())
            throw Error("'" + file + "' also contains certificates for other addresses",
                        "edit that file by hand");
        std::string side_file = side_file_of(file);
        if (std::remove(file.c_str()) != 0)
            throw Error("cannot remove '" + file + "'");
        if (!side_file.empty())
            std::remove(side_file.c_str());
        removed.push_back(file);
    }
    return removed;
}

std::optional<std::vector<std::string>> capabilities_in_folder(const std::string &folder,
                                                               X509 *certificate) {
    std::string fingerprint = certificate_fingerprint(certificate);
    for (const auto &file : certificate_files(folder)) {
        std::optional<LearnedInfo> info = read_side_file(side_file_of(file));
        if (info && info->fingerprint == fingerprint)
            return info->capabilities;
    }
    return std::nullopt;
}

std::string cipher_name(const std::string &oid) {
    for (const auto &cipher : supported_ciphers)
        if (oid == cipher.oid)
            return cipher.name;
    return {};
}

std::string choose_cipher(const std::vector<std::optional<std::vector<std::string>>> &recipients,
                          const std::string &fallback) {
    if (recipients.empty())
        return fallback;
    for (const auto &capabilities : recipients)
        if (!capabilities)
            return fallback;
    for (const auto &oid : *recipients.front()) {
        if (cipher_name(oid).empty())
            continue;
        bool common = true;
        for (const auto &capabilities : recipients)
            common = common && std::find(capabilities->begin(), capabilities->end(), oid) !=
                                   capabilities->end();
        if (common)
            return cipher_name(oid);
    }
    return fallback;
}

} // namespace p11smime
