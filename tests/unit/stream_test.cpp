#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "cms/cms_split.h"
#include "cms/decrypt.h"
#include "cms/encrypt.h"
#include "cms/mime.h"
#include "cms/sign.h"
#include "cms/stream.h"
#include "cms/verify.h"
#include "common/error.h"

using namespace p11smime;

namespace {

// Splits text into chunks at the given positions and returns what a converter makes of them.
template <typename Converter>
std::string convert_in_chunks(const std::string &text, const std::vector<size_t> &cuts) {
    Converter converter;
    std::string out;
    size_t start = 0;
    for (size_t cut : cuts) {
        converter.convert(text.data() + start, cut - start, out);
        start = cut;
    }
    converter.convert(text.data() + start, text.size() - start, out);
    if constexpr (std::is_same_v<Converter, LfConverter>)
        converter.finish(out);
    return out;
}

const std::vector<std::string> line_ending_samples = {
    "a\nb\r\nc\n", "\n\n\r\n", "x\r", "\r\r\n\n", "lone\rcr\r\nend", "", "\r\n",
};

} // namespace

TEST_CASE("crlf converter matches to_crlf at every split") {
    for (const auto &text : line_ending_samples)
        for (size_t cut = 0; cut <= text.size(); ++cut)
            CHECK(convert_in_chunks<CrlfConverter>(text, {cut}) == to_crlf(text));
}

TEST_CASE("lf converter matches to_lf at every split") {
    for (const auto &text : line_ending_samples)
        for (size_t cut = 0; cut <= text.size(); ++cut)
            CHECK(convert_in_chunks<LfConverter>(text, {cut}) == to_lf(text));
}

TEST_CASE("transfer encoding scan matches needs_transfer_encoding in chunks") {
    std::vector<std::string> samples = {"plain ascii\r\n",
                                        "caf\xc3\xa9\n",
                                        std::string("nul\0byte", 8),
                                        std::string(999, 'x') + "\n",
                                        std::string(998, 'x') + "\r\n",
                                        std::string(500, 'y') + std::string(499, 'y')};
    for (const auto &text : samples) {
        for (size_t cut = 0; cut <= text.size(); cut += 97) {
            TransferEncodingScan scan;
            scan.update(text.data(), cut);
            scan.update(text.data() + cut, text.size() - cut);
            CHECK(scan.needed() == needs_transfer_encoding(text));
        }
    }
}

namespace {

// A software RSA key and a self-signed certificate for it, with the S/MIME key usages, so
// that the cms layer can be tested without a token.
struct SoftwareSigner {
    EvpPkeyPtr key;
    X509Ptr certificate;

    SoftwareSigner() {
        key.reset(EVP_RSA_gen(2048));
        REQUIRE(key);
        certificate.reset(X509_new());
        X509_set_version(certificate.get(), 2);
        ASN1_INTEGER_set(X509_get_serialNumber(certificate.get()), 1);
        X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -3600);
        X509_gmtime_adj(X509_getm_notAfter(certificate.get()), 3600);
        X509_set_pubkey(certificate.get(), key.get());
        X509_NAME *name = X509_get_subject_name(certificate.get());
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char *>("unit signer"), -1, -1,
                                   0);
        X509_set_issuer_name(certificate.get(), name);
        add_extension(NID_key_usage, "digitalSignature,keyEncipherment");
        add_extension(NID_subject_alt_name, "email:unit@example.org");
        REQUIRE(X509_sign(certificate.get(), key.get(), EVP_sha256()) > 0);
    }

    void add_extension(int nid, const char *value) {
        X509_EXTENSION *extension =
            X509V3_EXT_conf_nid(nullptr, nullptr, nid, const_cast<char *>(value));
        REQUIRE(extension);
        X509_add_ext(certificate.get(), extension, -1);
        X509_EXTENSION_free(extension);
    }
};

const std::string unit_message = "From: Unit <unit@example.org>\n"
                                 "To: someone@example.net\n"
                                 "Subject: unit test\n"
                                 "MIME-Version: 1.0\n"
                                 "Content-Type: text/plain\n"
                                 "\n"
                                 "Line one.\n"
                                 "Line two, with trailing spaces.  \n";

VerifyOptions trusting(const std::string &ca_file) {
    VerifyOptions options;
    options.ca_file = ca_file;
    options.system_ca = false;
    return options;
}

std::string write_certificate(X509 *certificate) {
    std::string path = temporary_folder() + "/p11smime-unit-ca-" + std::to_string(getpid());
    BioPtr file(BIO_new_file(path.c_str(), "w"));
    REQUIRE(file);
    PEM_write_bio_X509(file.get(), certificate);
    return path;
}

// Reads the DER of a CMS structure into a string reader.
std::unique_ptr<Reader> der_reader(CMS_ContentInfo *cms, bool streamed) {
    BioPtr out(BIO_new(BIO_s_mem()));
    if (streamed)
        REQUIRE(i2d_CMS_bio_stream(out.get(), cms, nullptr, CMS_STREAM) == 1);
    else
        REQUIRE(i2d_CMS_bio(out.get(), cms) == 1);
    char *data = nullptr;
    long length = BIO_get_mem_data(out.get(), &data);
    return std::make_unique<StringReader>(std::string(data, static_cast<size_t>(length)));
}

} // namespace

TEST_CASE("split_cms takes out signed content from DER") {
    SoftwareSigner signer;
    std::string content(100000, 'q');
    BioPtr data(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
    CmsPtr cms(CMS_sign(signer.certificate.get(), signer.key.get(), nullptr, data.get(),
                        CMS_BINARY | CMS_NOSMIMECAP));
    REQUIRE(cms);

    std::string taken;
    std::unique_ptr<Reader> der = der_reader(cms.get(), false);
    SplitCms split =
        split_cms(*der, [&taken](const char *bytes, size_t size) { taken.append(bytes, size); });
    CHECK(split.had_content);
    CHECK(taken == content);
    ASN1_OCTET_STRING **econtent = CMS_get0_content(split.structure.get());
    CHECK((econtent == nullptr || *econtent == nullptr));

    BioPtr detached(BIO_new_mem_buf(taken.data(), static_cast<int>(taken.size())));
    CHECK(CMS_verify(split.structure.get(), nullptr, nullptr, detached.get(), nullptr,
                     CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY) == 1);
}

TEST_CASE("split_cms takes out encrypted content from streamed BER") {
    SoftwareSigner recipient;
    STACK_OF(X509) *recipients = sk_X509_new_null();
    sk_X509_push(recipients, recipient.certificate.get());
    std::string plaintext(300000, 'z');
    BioPtr data(BIO_new_mem_buf(plaintext.data(), static_cast<int>(plaintext.size())));
    CmsPtr cms(CMS_encrypt(recipients, data.get(), EVP_aes_256_gcm(), CMS_BINARY | CMS_STREAM));
    sk_X509_free(recipients);
    REQUIRE(cms);

    BioPtr ber(BIO_new(BIO_s_mem()));
    REQUIRE(i2d_CMS_bio_stream(ber.get(), cms.get(), data.get(), CMS_BINARY | CMS_STREAM) == 1);
    char *bytes = nullptr;
    long length = BIO_get_mem_data(ber.get(), &bytes);
    StringReader reader(std::string(bytes, static_cast<size_t>(length)));

    std::string ciphertext;
    SplitCms split = split_cms(
        reader, [&ciphertext](const char *chunk, size_t size) { ciphertext.append(chunk, size); });
    CHECK(split.had_content);
    CHECK(ciphertext.size() == plaintext.size());

    BioPtr detached(BIO_new_mem_buf(ciphertext.data(), static_cast<int>(ciphertext.size())));
    BioPtr out(BIO_new(BIO_s_mem()));
    REQUIRE(CMS_decrypt(split.structure.get(), recipient.key.get(), recipient.certificate.get(),
                        detached.get(), out.get(), CMS_BINARY) == 1);
    char *decrypted = nullptr;
    long decrypted_length = BIO_get_mem_data(out.get(), &decrypted);
    CHECK(std::string(decrypted, static_cast<size_t>(decrypted_length)) == plaintext);
}

TEST_CASE("peek_cms_type reads the content type only") {
    SoftwareSigner signer;
    BioPtr data(BIO_new_mem_buf("x", 1));
    CmsPtr cms(
        CMS_sign(signer.certificate.get(), signer.key.get(), nullptr, data.get(), CMS_BINARY));
    REQUIRE(cms);
    CHECK(peek_cms_type(*der_reader(cms.get(), false)) == NID_pkcs7_signed);
    StringReader not_cms("From: someone\n\nbody\n");
    CHECK(peek_cms_type(not_cms) == NID_undef);
}

TEST_CASE("sign_message round-trips through verify_message") {
    SoftwareSigner signer;
    std::string ca_file = write_certificate(signer.certificate.get());
    for (bool opaque : {false, true}) {
        CAPTURE(opaque);
        SignOptions options;
        options.key = signer.key.get();
        options.certificate = signer.certificate.get();
        options.opaque = opaque;
        std::string signed_message = sign_message(unit_message, options);

        VerifyResult result = verify_message(signed_message, trusting(ca_file));
        CHECK(result.valid);
        // The content is the signed entity, without the routing headers outside it.
        CHECK(result.content == unit_message.substr(unit_message.find("Content-Type:")));
        CHECK(result.structure == (opaque ? "signed-data" : "multipart/signed"));
    }
    std::remove(ca_file.c_str());
}

TEST_CASE("encrypt_message round-trips through decrypt_message, and a tampered tag fails") {
    SoftwareSigner recipient;
    EncryptOptions options;
    options.recipients.push_back(recipient.certificate.get());
    options.cipher = "aes-256-gcm";
    std::string encrypted = encrypt_message(unit_message, options);

    KeyLookup lookup = [&recipient](const std::function<bool(X509 *)> &is_recipient,
                                    const std::vector<std::string> &) {
        REQUIRE(is_recipient(recipient.certificate.get()));
        return DecryptionKey{recipient.key.get(), recipient.certificate.get()};
    };
    DecryptResult result = decrypt_message(encrypted, lookup, VerifyOptions(), true);
    CHECK(result.valid);
    CHECK(result.content == unit_message);

    // The last base64 line before the end contains the GCM tag (mac) of the structure.
    size_t tag = encrypted.rfind('\n', encrypted.size() - 2) - 5;
    encrypted[tag] = encrypted[tag] == 'A' ? 'B' : 'A';
    DecryptResult tampered = decrypt_message(encrypted, lookup, VerifyOptions(), true);
    CHECK_FALSE(tampered.valid);
    REQUIRE(tampered.failures.size() == 1);
    CHECK(tampered.failures.front().find("cannot be decrypted") != std::string::npos);
    CHECK(tampered.content.empty());
}
