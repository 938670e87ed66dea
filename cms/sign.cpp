#include "cms/sign.h"

#include <openssl/ess.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "cms/canonical.h"
#include "cms/cms_split.h"
#include "cms/mime.h"
#include "cms/smime_output.h"
#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {

std::string default_digest(EVP_PKEY *key) {
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
        int bits = EVP_PKEY_get_bits(key);
        if (bits > 384)
            return "sha512";
        if (bits > 256)
            return "sha384";
    }
    return "sha256";
}

std::string micalg_name(const std::string &digest) {
    if (digest == "sha256")
        return "sha-256";
    if (digest == "sha384")
        return "sha-384";
    if (digest == "sha512")
        return "sha-512";
    throw Error("unsupported digest '" + digest + "'", "use sha256, sha384 or sha512");
}

namespace {

// Adds the ESS signingCertificateV2 attribute (RFC 5035), which binds the signer certificate
// to the signature so it cannot be swapped for another certificate with the same key.
void add_signing_certificate_v2(CMS_SignerInfo *signer, X509 *certificate) {
    ESS_SIGNING_CERT_V2 *attribute =
        OSSL_ESS_signing_cert_v2_new_init(EVP_sha256(), certificate, nullptr, 1);
    if (!attribute)
        throw OpensslError("cannot build the signingCertificateV2 attribute");

    unsigned char *der = nullptr;
    int length = i2d_ESS_SIGNING_CERT_V2(attribute, &der);
    ESS_SIGNING_CERT_V2_free(attribute);
    int added = length > 0 && CMS_signed_add1_attr_by_NID(signer,
                                                          NID_id_smime_aa_signingCertificateV2,
                                                          V_ASN1_SEQUENCE, der, length);
    OPENSSL_free(der);
    if (!added)
        throw OpensslError("cannot add the signingCertificateV2 attribute");
}

void use_rsa_pss(CMS_SignerInfo *signer) {
    EVP_PKEY_CTX *context = CMS_SignerInfo_get0_pkey_ctx(signer);
    if (!context || EVP_PKEY_CTX_set_rsa_padding(context, RSA_PKCS1_PSS_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(context, RSA_PSS_SALTLEN_DIGEST) <= 0)
        throw OpensslError("cannot select RSASSA-PSS for this key",
                           "RSA-PSS needs an RSA key; drop --rsa-pss for EC keys");

    // OpenSSL 3.0 sets the signatureAlgorithm of a PSS signer only when it signs, but a
    // streamed structure is encoded before that, and an empty algorithm fails with "illegal
    // zero content" (so does openssl cms -sign -stream). Signing replaces this placeholder
    // with the full RSASSA-PSS parameters.
    X509_ALGOR *algorithm = nullptr;
    CMS_SignerInfo_get0_algs(signer, nullptr, nullptr, nullptr, &algorithm);
    const ASN1_OBJECT *object = nullptr;
    if (algorithm)
        X509_ALGOR_get0(&object, nullptr, nullptr, algorithm);
    if (algorithm && (!object || OBJ_obj2nid(object) == NID_undef))
        X509_ALGOR_set0(algorithm, OBJ_nid2obj(NID_rsassaPss), V_ASN1_UNDEF, nullptr);
}

// Returns a SignedData with its signer, ready for its content. The flags select a detached
// or embedded content, and streaming.
CmsPtr new_signed_data(const SignOptions &options, const std::string &digest,
                       unsigned int flags) {
    CmsPtr cms(CMS_sign(nullptr, nullptr, options.chain, nullptr, flags | CMS_PARTIAL));
    if (!cms)
        throw OpensslError("cannot create SignedData");

    const EVP_MD *md = EVP_get_digestbyname(digest.c_str());
    if (!md)
        throw Error("unknown digest '" + digest + "'", "use sha256, sha384 or sha512");

    unsigned int signer_flags = CMS_BINARY | (options.rsa_pss ? CMS_KEY_PARAM : 0);
    CMS_SignerInfo *signer =
        CMS_add1_signer(cms.get(), options.certificate, options.key, md, signer_flags);
    if (!signer)
        throw OpensslError("cannot add the signer",
                           "check that the certificate belongs to the token key");
    if (options.rsa_pss)
        use_rsa_pss(signer);
    add_signing_certificate_v2(signer, options.certificate);
    return cms;
}

// Signs content held in memory, embedded with options.opaque or else detached.
CmsPtr build_signed_data(const std::string &content, const SignOptions &options,
                         const std::string &digest) {
    unsigned int flags = CMS_BINARY | (options.opaque ? 0 : CMS_DETACHED);
    CmsPtr cms = new_signed_data(options, digest, flags);
    BioPtr data(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
    if (!data || !CMS_final(cms.get(), data.get(), nullptr, flags))
        throw OpensslError("signing failed");
    return cms;
}

// Hashes the entity while it is written into the first part, then signs the digest. The
// digest BIOs of CMS_dataInit() end in a null BIO, because the content is detached.
void sign_multipart(const CanonicalEntity &entity, SmimeWriter &writer,
                   const SignOptions &options, const std::string &digest) {
    CmsPtr cms = new_signed_data(options, digest, CMS_BINARY | CMS_DETACHED);
    BioPtr digests(CMS_dataInit(cms.get(), nullptr));
    if (!digests)
        throw OpensslError("cannot start hashing the content");

    writer.begin_multipart_signed(micalg_name(digest));
    std::unique_ptr<Reader> content = entity.open(true);
    copy_all(*content, [&](const char *data, size_t size) {
        write_bio(digests.get(), data, size, "the content digest");
        writer.write_entity(data, size);
    });
    if (CMS_dataFinal(cms.get(), digests.get()) != 1)
        throw OpensslError("signing failed");
    writer.end_multipart_signed(cms_der(cms.get()));
}

void sign_opaque_streaming(const CanonicalEntity &entity, SmimeWriter &writer,
                           const SignOptions &options, const std::string &digest) {
    CmsPtr cms = new_signed_data(options, digest, CMS_BINARY | CMS_STREAM);
    writer.begin_opaque("signed-data", "smime.p7m");
    std::unique_ptr<Reader> content = entity.open(true);
    try {
        stream_cms(cms.get(), *content, writer.base64_body());
    } catch (const OpensslError &) {
        writer.rethrow_output_error();
        throw;
    }
    writer.end_opaque();
}

void sign_opaque_der(const CanonicalEntity &entity, SmimeWriter &writer,
                     const SignOptions &options, const std::string &digest) {
    std::unique_ptr<Reader> reader = entity.open(false);
    std::string content = read_all(*reader);
    CmsPtr cms = new_signed_data(options, digest, CMS_BINARY);
    BioPtr data(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
    if (!data || !CMS_final(cms.get(), data.get(), nullptr, CMS_BINARY))
        throw OpensslError("signing failed");
    writer.opaque("signed-data", "smime.p7m", cms_der(cms.get()));
}

void sign_to(const MessageSource &source, BIO *out, const SignOptions &options, bool stream) {
    clear_openssl_errors();
    MessageHeaders headers = read_headers(source);
    CanonicalEntity entity(headers, source, scratch_folder(options.temp_folder));
    std::string digest = options.digest.empty() ? default_digest(options.key) : options.digest;
    micalg_name(digest); // rejects an unsupported digest before anything is written

    SmimeWriter writer(headers, out);
    if (!options.opaque)
        sign_multipart(entity, writer, options, digest);
    else if (stream)
        sign_opaque_streaming(entity, writer, options, digest);
    else
        sign_opaque_der(entity, writer, options, digest);
}

} // namespace

std::string sign_message(const std::string &message, const SignOptions &options) {
    MessageSource source = MessageSource::from_memory(message);
    BioPtr out(BIO_new(BIO_s_mem()));
    if (!out)
        throw OpensslError("cannot allocate a buffer");
    sign_to(source, out.get(), options, false);
    return memory_bio_text(out.get());
}

void sign_stream(const MessageSource &source, BIO *out, const SignOptions &options) {
    sign_to(source, out, options, true);
}

std::string sign_detached(const std::string &data, const SignOptions &options) {
    clear_openssl_errors();
    std::string digest = options.digest.empty() ? default_digest(options.key) : options.digest;
    micalg_name(digest); // rejects a digest that sign_message would reject too

    SignOptions detached = options;
    detached.opaque = false;
    CmsPtr cms = build_signed_data(data, detached, digest);
    return cms_der(cms.get());
}

} // namespace p11smime
