#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <openssl/cms.h>
#include <openssl/x509v3.h>

#include "cms/cert_dir.h"
#include "cms/crl_check.h"
#include "cms/trust_checks.h"
#include "cms/validation_time.h"
#include "common/error.h"
#include "common/ossl.h"

using namespace p11smime;

namespace {

const std::string aes_128_cbc = "2.16.840.1.101.3.4.1.2";
const std::string aes_256_cbc = "2.16.840.1.101.3.4.1.42";
const std::string aes_128_gcm = "2.16.840.1.101.3.4.1.6";
const std::string aes_256_gcm = "2.16.840.1.101.3.4.1.46";
const std::string des_ede3_cbc = "1.2.840.113549.3.7";

// A self-signed P-256 certificate for email, valid from an hour ago for a day.
X509Ptr make_certificate(EVP_PKEY *key, const std::string &email) {
    X509Ptr certificate(X509_new());
    X509_set_version(certificate.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(certificate.get()), 1);
    X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(certificate.get()), 86400);
    X509_NAME *name = X509_get_subject_name(certificate.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char *>("unit test"), -1, -1, 0);
    X509_set_issuer_name(certificate.get(), name);
    X509_set_pubkey(certificate.get(), key);
    X509V3_CTX context;
    X509V3_set_ctx(&context, certificate.get(), certificate.get(), nullptr, nullptr, 0);
    X509_EXTENSION *extension = X509V3_EXT_conf_nid(nullptr, &context, NID_subject_alt_name,
                                                    ("email:" + email).c_str());
    X509_add_ext(certificate.get(), extension, -1);
    X509_EXTENSION_free(extension);
    X509_sign(certificate.get(), key, EVP_sha256());
    return certificate;
}

} // namespace

TEST_CASE("at-time accepts now, signing and UTC dates") {
    CHECK(parse_at_time("now").kind == AtTime::Kind::now);
    CHECK(parse_at_time("signing").kind == AtTime::Kind::signing);
    AtTime date = parse_at_time("2013-11-02");
    CHECK(date.kind == AtTime::Kind::given);
    CHECK(date.given == 1383350400);
    CHECK(parse_at_time("2013-11-02T20:28:04Z").given == 1383424084);
    CHECK(parse_at_time("2013-11-02 20:28:04").given == 1383424084);
    CHECK_THROWS_AS(parse_at_time("yesterday"), Error);
    CHECK_THROWS_AS(parse_at_time("2013-11-02T20:28:04+02:00"), Error);
    CHECK_THROWS_AS(parse_at_time(""), Error);
}

TEST_CASE("iso8601 formats UTC") { CHECK(iso8601(1383424084) == "2013-11-02T20:28:04Z"); }

TEST_CASE("Date header is read with its zone") {
    CHECK(parse_date_header("Sat, 02 Nov 2013 16:28:04 -0400") == 1383424084);
    CHECK(parse_date_header("Mon, 26 Jan 2026 14:38:03 +0000") == 1769438283);
    CHECK_FALSE(parse_date_header("not a date").has_value());
}

TEST_CASE("Date header far from signingTime gives a note") {
    SignerReport report;
    add_time_notes(nullptr, 1383424084, "Sat, 02 Nov 2013 16:28:04 -0400", report);
    CHECK(report.date_note.empty());
    add_time_notes(nullptr, 1383424084 - 3601, "Sat, 02 Nov 2013 16:28:04 -0400", report);
    CHECK(report.date_note.find("61 minutes after signingTime") != std::string::npos);
    SignerReport unreadable;
    add_time_notes(nullptr, 1383424084, "yesterday", unreadable);
    CHECK(unreadable.date_note.find("cannot be read") != std::string::npos);
}

TEST_CASE("validation time follows --at-time and rejects a missing or future signingTime") {
    SignerReport report;
    CHECK(choose_validation_time(parse_at_time("signing"), 1383424084, report) == 1383424084);
    CHECK(report.validation_time_source == "signingTime");
    CHECK(report.time_failure.empty());

    SignerReport missing;
    choose_validation_time(parse_at_time("signing"), std::nullopt, missing);
    CHECK(missing.time_failure.find("no signingTime") != std::string::npos);

    SignerReport future;
    choose_validation_time(parse_at_time("signing"), std::time(nullptr) + 86400, future);
    CHECK(future.time_failure.find("in the future") != std::string::npos);
    CHECK(future.validation_time_source == "now");
}

TEST_CASE("revocation reasons that reach back in time") {
    CHECK(revoked_at_any_time(CRL_REASON_KEY_COMPROMISE));
    CHECK(revoked_at_any_time(CRL_REASON_CA_COMPROMISE));
    CHECK_FALSE(revoked_at_any_time(CRL_REASON_SUPERSEDED));
    CHECK_FALSE(revoked_at_any_time(-1));
    CHECK(crl_reason_name(CRL_REASON_KEY_COMPROMISE) == "keyCompromise");
    CHECK(crl_reason_name(-1) == "no reason given");
}

TEST_CASE("cipher choice follows the recipients' SMIMECapabilities") {
    using Capabilities = std::optional<std::vector<std::string>>;
    const std::string fallback = "aes-256-cbc";
    CHECK(choose_cipher({}, fallback) == fallback);
    CHECK(choose_cipher({Capabilities{{des_ede3_cbc, aes_128_gcm, aes_256_cbc}}}, fallback) ==
          "aes-128-gcm");
    CHECK(choose_cipher({Capabilities{{aes_256_gcm, aes_128_cbc}},
                         Capabilities{{aes_128_cbc, aes_256_gcm}}},
                        fallback) == "aes-256-gcm");
    CHECK(choose_cipher({Capabilities{{aes_256_gcm}}, Capabilities{{aes_128_cbc}}}, fallback) ==
          fallback);
    CHECK(choose_cipher({Capabilities{{aes_128_gcm}}, std::nullopt}, fallback) == fallback);
    CHECK(choose_cipher({Capabilities{{des_ede3_cbc}}}, fallback) == fallback);
    CHECK(cipher_name(aes_128_cbc) == "aes-128-cbc");
    CHECK(cipher_name(des_ede3_cbc).empty());
}

TEST_CASE("SMIMECapabilities are read in order and learned with the certificate") {
    EvpPkeyPtr key(EVP_EC_gen("P-256"));
    REQUIRE(key);
    X509Ptr certificate = make_certificate(key.get(), "unit@example.org");

    CmsPtr cms(CMS_sign(nullptr, nullptr, nullptr, nullptr, CMS_PARTIAL | CMS_BINARY));
    REQUIRE(cms);
    CMS_SignerInfo *signer = CMS_add1_signer(cms.get(), certificate.get(), key.get(),
                                             EVP_sha256(), CMS_NOSMIMECAP | CMS_BINARY);
    REQUIRE(signer);
    STACK_OF(X509_ALGOR) *capabilities = nullptr;
    CMS_add_simple_smimecap(&capabilities, NID_des_ede3_cbc, -1);
    CMS_add_simple_smimecap(&capabilities, NID_aes_128_gcm, -1);
    CMS_add_simple_smimecap(&capabilities, NID_aes_256_cbc, -1);
    REQUIRE(CMS_add_smimecap(signer, capabilities) == 1);
    sk_X509_ALGOR_pop_free(capabilities, X509_ALGOR_free);
    BioPtr content(BIO_new_mem_buf("content", 7));
    REQUIRE(CMS_final(cms.get(), content.get(), nullptr, CMS_BINARY) == 1);

    std::vector<std::string> oids = smime_capabilities(signer);
    REQUIRE(oids == std::vector<std::string>{des_ede3_cbc, aes_128_gcm, aes_256_cbc});

    auto folder = std::filesystem::temp_directory_path() /
                  ("p11smime-unit-" + std::to_string(::getpid()));
    std::filesystem::remove_all(folder);
    LearnResult learned = learn_certificate(folder.string(), "Unit@Example.org",
                                            certificate_der(certificate.get()), oids, "");
    CHECK(learned.outcome == LearnResult::Outcome::added);
    CHECK(learned.file == (folder / "unit@example.org.pem").string());
    std::optional<std::vector<std::string>> stored =
        capabilities_in_folder(folder.string(), certificate.get());
    REQUIRE(stored.has_value());
    CHECK(*stored == oids);
    CHECK(choose_cipher({stored}, "aes-256-cbc") == "aes-128-gcm");
    CHECK(remove_certificates(folder.string(), "unit@example.org").size() == 1);
    CHECK(read_certificate_folder_entries(folder.string()).empty());
    std::filesystem::remove_all(folder);
}
