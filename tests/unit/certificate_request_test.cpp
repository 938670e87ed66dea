#include <doctest/doctest.h>

#include <memory>
#include <string>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cms/certificate_request.h"
#include "common/error.h"
#include "common/ossl.h"
#include "pcsc/readers.h"

using namespace p11smime;

namespace {

using X509ReqPtr = std::unique_ptr<X509_REQ, CDeleter<X509_REQ_free>>;

EvpPkeyPtr software_key(const char *curve) {
    return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve));
}

X509ReqPtr parse_request(const std::string &pem) {
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    return X509ReqPtr(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
}

std::string subject_of(X509_REQ *request) {
    char text[256] = "";
    X509_NAME_oneline(X509_REQ_get_subject_name(request), text, sizeof text);
    return text;
}

// Returns the text of one requested extension, as `openssl req -text` prints it.
std::string extension_text(X509_REQ *request, int nid) {
    STACK_OF(X509_EXTENSION) *extensions = X509_REQ_get_extensions(request);
    std::string text;
    for (int i = 0; i < sk_X509_EXTENSION_num(extensions); ++i) {
        X509_EXTENSION *extension = sk_X509_EXTENSION_value(extensions, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(extension)) != nid)
            continue;
        BioPtr bio(BIO_new(BIO_s_mem()));
        X509V3_EXT_print(bio.get(), extension, 0, 0);
        char *data = nullptr;
        long length = BIO_get_mem_data(bio.get(), &data);
        text.assign(data, static_cast<size_t>(length));
    }
    sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
    return text;
}

} // namespace

TEST_CASE("certificate request carries S/MIME extensions") {
    EvpPkeyPtr key = software_key("P-256");
    REQUIRE(key);
    CertificateRequestOptions options;
    options.email = "alice@example.org";
    X509ReqPtr request = parse_request(make_certificate_request(key.get(), options));
    REQUIRE(request);

    CHECK(X509_REQ_verify(request.get(), key.get()) == 1);
    CHECK(subject_of(request.get()) == "/CN=alice@example.org");
    CHECK(extension_text(request.get(), NID_subject_alt_name) == "email:alice@example.org");
    CHECK(extension_text(request.get(), NID_key_usage) ==
          "Digital Signature, Non Repudiation, Key Agreement");
    CHECK(extension_text(request.get(), NID_ext_key_usage) == "E-mail Protection");
}

TEST_CASE("certificate request use sign omits key agreement") {
    EvpPkeyPtr key = software_key("P-256");
    CertificateRequestOptions options;
    options.email = "alice@example.org";
    options.use = CertificateUse::signing;
    X509ReqPtr request = parse_request(make_certificate_request(key.get(), options));
    REQUIRE(request);
    CHECK(extension_text(request.get(), NID_key_usage) == "Digital Signature, Non Repudiation");
}

TEST_CASE("certificate request signs P-384 with SHA-384") {
    EvpPkeyPtr key = software_key("P-384");
    CertificateRequestOptions options;
    options.email = "carol@example.org";
    X509ReqPtr request = parse_request(make_certificate_request(key.get(), options));
    REQUIRE(request);
    CHECK(X509_REQ_get_signature_nid(request.get()) == NID_ecdsa_with_SHA384);
}

TEST_CASE("certificate request subject with escaped slash") {
    EvpPkeyPtr key = software_key("P-256");
    CertificateRequestOptions options;
    options.email = "alice@example.org";
    options.subject = "/CN=Alice Example/O=Example\\/Test Ltd";
    X509ReqPtr request = parse_request(make_certificate_request(key.get(), options));
    REQUIRE(request);
    char organization[64] = "";
    X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(request.get()), NID_organizationName,
                              organization, sizeof organization);
    CHECK(std::string(organization) == "Example/Test Ltd");
}

TEST_CASE("certificate request rejects bad input") {
    EvpPkeyPtr key = software_key("P-256");
    CertificateRequestOptions options;
    for (const char *email : {"", "alice", "@example.org", "alice@", "a@b@c", "a lice@x.org",
                              "al\xc3\xaf" "ce@example.org"}) {
        CAPTURE(email);
        options.email = email;
        CHECK_THROWS_AS(make_certificate_request(key.get(), options), Error);
    }
    options.email = "alice@example.org";
    for (const char *subject : {"CN=Alice", "/", "/CN", "/CN=", "/=Alice", "/NOSUCH=Alice"}) {
        CAPTURE(subject);
        options.subject = subject;
        CHECK_THROWS_AS(make_certificate_request(key.get(), options), Error);
    }
}

TEST_CASE("atr text is colon-separated lowercase hex") {
    CHECK(atr_text({}) == "");
    CHECK(atr_text({0x3b, 0x95, 0x0b}) == "3b:95:0b");
}
