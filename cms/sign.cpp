#include "cms/sign.h"

#include <openssl/ess.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

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
}

CmsPtr build_signed_data(const std::string &content, const SignOptions &options,
                         const std::string &digest) {
    unsigned int flags = CMS_BINARY | CMS_PARTIAL | (options.opaque ? 0 : CMS_DETACHED);
    CmsPtr cms(CMS_sign(nullptr, nullptr, options.chain, nullptr, flags));
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

    BioPtr data(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
    if (!data || !CMS_final(cms.get(), data.get(), nullptr, flags))
        throw OpensslError("signing failed");
    return cms;
}

std::string der_bytes(CMS_ContentInfo *cms) {
    unsigned char *der = nullptr;
    int length = i2d_CMS_ContentInfo(cms, &der);
    if (length <= 0)
        throw OpensslError("cannot encode the CMS structure");
    std::string bytes(reinterpret_cast<char *>(der), static_cast<size_t>(length));
    OPENSSL_free(der);
    return bytes;
}

} // namespace

std::string sign_message(const std::string &message, const SignOptions &options) {
    clear_openssl_errors();
    SplitMessage split = split_message(message);
    std::string entity = canonical_entity(split, message);
    std::string digest = options.digest.empty() ? default_digest(options.key) : options.digest;
    std::string micalg = micalg_name(digest);

    CmsPtr cms = build_signed_data(entity, options, digest);
    std::string der = der_bytes(cms.get());

    SmimeWriter writer(split);
    if (options.opaque)
        return writer.opaque("signed-data", "smime.p7m", der);
    return writer.multipart_signed(micalg, entity, der);
}

std::string sign_detached(const std::string &data, const SignOptions &options) {
    clear_openssl_errors();
    std::string digest = options.digest.empty() ? default_digest(options.key) : options.digest;
    micalg_name(digest); // rejects a digest that sign_message would reject too

    SignOptions detached = options;
    detached.opaque = false;
    CmsPtr cms = build_signed_data(data, detached, digest);
    return der_bytes(cms.get());
}

} // namespace p11smime
