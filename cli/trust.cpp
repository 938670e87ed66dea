#include "cli/trust.h"

#include <strings.h>

#include <cstdlib>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cms/cert_dir.h"
#include "common/error.h"

namespace p11smime::cli {
namespace {


bool is_address_of(const SignerReport &signer, const std::string &address) {
    for (const auto &email : signer.emails)
        if (strcasecmp(email.c_str(), address.c_str()) == 0)
            return true;
    return false;
}

void print_learn_result(const LearnResult &learned, const std::string &address) {
    switch (learned.outcome) {
    case LearnResult::Outcome::added:
        std::cerr << "p11smime: stored the certificate of " << address << " in "
                  << learned.file << "\n";
        break;
    case LearnResult::Outcome::replaced:
        std::cerr << "p11smime: replaced the certificate of " << address << " in "
                  << learned.file << " with a newer one\n";
        break;
    case LearnResult::Outcome::updated:
        std::cerr << "p11smime: updated the SMIMECapabilities of " << address << " in "
                  << learned.file << "\n";
        break;
    case LearnResult::Outcome::kept:
        warn("did not store the certificate of " + address + ": " + learned.reason);
        break;
    }
}

} // namespace

void learn_signers(const std::string &folder, const VerifyResult &result) {
    for (const auto &signer : result.signers) {
        if (signer.certificate_der.empty())
            continue;
        if (!is_address_of(signer, result.from)) {
            warn("did not store the certificate of '" + signer.subject +
                 "': the From address is not one of its email addresses");
            continue;
        }
        LearnResult learned = learn_certificate(folder, result.from, signer.certificate_der,
                                                signer.capabilities, signer.signing_time);
        print_learn_result(learned, result.from);
    }
}

std::string content_cipher(const std::vector<X509Ptr> &recipients,
                           const EncryptionSettings &settings) {
    if (settings.cipher_given || !settings.cert_dir)
        return settings.cipher;
    std::vector<std::optional<std::vector<std::string>>> capabilities;
    for (const auto &certificate : recipients)
        capabilities.push_back(capabilities_in_folder(*settings.cert_dir, certificate.get()));
    return choose_cipher(capabilities, settings.cipher);
}

std::optional<std::string> default_revocation_cache() {
    const char *cache = std::getenv("XDG_CACHE_HOME");
    if (cache && *cache == '/')
        return std::string(cache) + "/p11smime/revocation";
    const char *home = std::getenv("HOME");
    if (home && *home)
        return std::string(home) + "/.cache/p11smime/revocation";
    return std::nullopt;
}

void add_trust_settings(const VerifyCommandOptions &options, VerifyOptions &verify) {
    verify.at_time = parse_at_time(options.at_time);
    verify.date_mismatch_fails = options.date_mismatch == "fail";

    RevocationOptions &revocation = verify.revocation;
    revocation.crl_files = options.crl_files;
    revocation.crl_dir = options.crl_dir;
    revocation.online = options.online;
    revocation.ocsp_url = options.ocsp_url;
    revocation.mode = options.revocation == "hard" ? RevocationMode::hard : RevocationMode::soft;
    revocation.timeout_seconds = options.timeout_seconds;
    revocation.cache_dir = options.cache_dir ? options.cache_dir : default_revocation_cache();
}

} // namespace p11smime::cli
