#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <string>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cms/sign.h"
#include "cms/verify.h"
#include "common/error.h"
#include "common/ossl.h"

using namespace p11smime;

namespace {

EvpPkeyPtr make_p256_key() {
    EvpPkeyPtr key(EVP_EC_gen("P-256"));
    REQUIRE(key);
    return key;
}

void add_extension(X509 *certificate, X509 *issuer, int nid, const char *value) {
    X509V3_CTX context;
    X509V3_set_ctx_nodb(&context);
    X509V3_set_ctx(&context, issuer, certificate, nullptr, nullptr, 0);
    X509_EXTENSION *extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value);
    REQUIRE(extension);
    X509_add_ext(certificate, extension, -1);
    X509_EXTENSION_free(extension);
}

// Issues a certificate for key, signed by issuer_key; a null issuer makes it self-signed.
X509Ptr issue(const char *common_name, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
              bool ca) {
    X509Ptr certificate(X509_new());
    X509_set_version(certificate.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(certificate.get()), ca ? 1 : 2);
    X509_NAME *name = X509_get_subject_name(certificate.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char *>(common_name), -1, -1, 0);
    X509 *signer = issuer ? issuer : certificate.get();
    X509_set_issuer_name(certificate.get(), X509_get_subject_name(signer));
    X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(certificate.get()), 3600L * 24 * 30);
    X509_set_pubkey(certificate.get(), key);
    if (ca) {
        add_extension(certificate.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
        add_extension(certificate.get(), signer, NID_key_usage, "critical,keyCertSign");
    } else {
        add_extension(certificate.get(), signer, NID_key_usage, "critical,digitalSignature");
        add_extension(certificate.get(), signer, NID_ext_key_usage, "emailProtection");
        add_extension(certificate.get(), signer, NID_subject_alt_name,
                      "email:signer@example.org");
    }
    REQUIRE(X509_sign(certificate.get(), issuer_key, EVP_sha256()) > 0);
    return certificate;
}

// A CA and a signer issued by it, with the CA certificate in a PEM file for VerifyOptions.
struct TestPki {
    EvpPkeyPtr ca_key = make_p256_key();
    X509Ptr ca = issue("detached test CA", ca_key.get(), nullptr, ca_key.get(), true);
    EvpPkeyPtr signer_key = make_p256_key();
    X509Ptr signer = issue("detached test signer", signer_key.get(), ca.get(), ca_key.get(),
                           false);
    std::string ca_file;

    TestPki() {
        char path[] = "/tmp/p11smime-detached-test.XXXXXX";
        int fd = mkstemp(path);
        REQUIRE(fd >= 0);
        close(fd);
        ca_file = path;
        BioPtr bio(BIO_new_file(path, "w"));
        REQUIRE(PEM_write_bio_X509(bio.get(), ca.get()) == 1);
    }
    ~TestPki() { std::remove(ca_file.c_str()); }

    VerifyOptions trust_ca() const {
        VerifyOptions options;
        options.ca_file = ca_file;
        options.system_ca = false;
        return options;
    }

    std::string sign(const std::string &data) const {
        SignOptions options;
        options.key = signer_key.get();
        options.certificate = signer.get();
        return sign_detached(data, options);
    }
};

// A git commit object: LF line ends, no MIME, and trailing spaces that must stay signed.
const std::string commit_bytes = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n"
                                 "author A U Thor <signer@example.org> 1700000000 +0000\n"
                                 "committer A U Thor <signer@example.org> 1700000000 +0000\n"
                                 "\n"
                                 "Subject line  \n";

} // namespace

TEST_CASE("detached signature verifies over the raw bytes") {
    TestPki pki;
    VerifyResult result = verify_detached(commit_bytes, pki.sign(commit_bytes), pki.trust_ca());
    CHECK(result.valid);
    CHECK(result.structure == "detached");
    REQUIRE(result.signers.size() == 1);
    const SignerReport &signer = result.signers[0];
    CHECK(signer.signature_valid);
    CHECK(signer.certificate_valid);
    CHECK(signer.key_type == "EC");
    CHECK(signer.fingerprint_sha1.size() == 40);
    CHECK(signer.signing_time_unix > 1700000000);
}

TEST_CASE("detached signature fails on changed bytes") {
    TestPki pki;
    std::string signature = pki.sign(commit_bytes);

    std::string crlf = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\r\n" +
                       commit_bytes.substr(commit_bytes.find('\n') + 1);
    VerifyResult line_ends = verify_detached(crlf, signature, pki.trust_ca());
    CHECK_FALSE(line_ends.valid);
    REQUIRE(line_ends.signers.size() == 1);
    CHECK_FALSE(line_ends.signers[0].signature_valid);

    std::string trimmed = commit_bytes.substr(0, commit_bytes.size() - 3) + "\n";
    VerifyResult whitespace = verify_detached(trimmed, signature, pki.trust_ca());
    CHECK_FALSE(whitespace.valid);
    REQUIRE_FALSE(whitespace.failures.empty());
    CHECK(whitespace.failures[0].find("does not match") != std::string::npos);
}

TEST_CASE("detached signature with untrusted issuer") {
    TestPki pki;
    TestPki other;
    VerifyResult result = verify_detached(commit_bytes, pki.sign(commit_bytes), other.trust_ca());
    CHECK_FALSE(result.valid);
    REQUIRE(result.signers.size() == 1);
    CHECK(result.signers[0].signature_valid);
    CHECK_FALSE(result.signers[0].certificate_valid);
}

TEST_CASE("detached verification rejects non-CMS input") {
    TestPki pki;
    CHECK_THROWS_AS(verify_detached(commit_bytes, "not DER", pki.trust_ca()), Error);
}
