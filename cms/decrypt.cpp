#include "cms/decrypt.h"

#include <strings.h>

#include <openssl/pem.h> // before cms.h, whose PEM_read_bio_CMS needs its macros

#include <openssl/cms.h>
#include <openssl/err.h>

#include "cms/gmime_ptr.h"
#include "cms/limits.h"
#include "cms/mime.h"
#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {
namespace {

// Deepest nesting of signed and encrypted layers that is unwrapped; a triple-wrapped message
// has three, and more than this is far beyond what mail clients produce.
constexpr int max_layers = 8;

enum class Structure { none, multipart_signed, signed_data, enveloped };

struct TopLevel {
    Structure structure = Structure::none;
    CmsPtr cms;
};

CmsPtr cms_from_der(const std::string &der) {
    const auto *bytes = reinterpret_cast<const unsigned char *>(der.data());
    return CmsPtr(d2i_CMS_ContentInfo(nullptr, &bytes, static_cast<long>(der.size())));
}

// Reads a bare CMS structure, DER or PEM, as openssl cms -outform writes it.
CmsPtr cms_from_bare_input(const std::string &input) {
    if (!input.empty() && static_cast<unsigned char>(input[0]) == 0x30)
        return cms_from_der(input);
    if (input.rfind("-----BEGIN ", 0) != 0)
        return nullptr;
    BioPtr bio(BIO_new_mem_buf(input.data(), static_cast<int>(input.size())));
    CmsPtr cms(PEM_read_bio_CMS(bio.get(), nullptr, nullptr, nullptr));
    clear_openssl_errors();
    return cms;
}

Structure structure_of(CMS_ContentInfo *cms) {
    switch (OBJ_obj2nid(CMS_get0_type(cms))) {
    case NID_pkcs7_signed:
        return Structure::signed_data;
    case NID_pkcs7_enveloped:
    case NID_id_smime_ct_authEnvelopedData:
        return Structure::enveloped;
    default:
        return Structure::none;
    }
}

bool is_p7m_part(GMimeObject *object) {
    if (GMIME_IS_APPLICATION_PKCS7_MIME(object))
        return true;
    if (!GMIME_IS_PART(object))
        return false;
    const char *name = g_mime_part_get_filename(GMIME_PART(object));
    size_t length = name ? strlen(name) : 0;
    return length >= 4 && strcasecmp(name + length - 4, ".p7m") == 0;
}

// Classifies the top-level entity only: S/MIME parts nested in other multiparts are not
// decrypted, so an attacker cannot splice a captured ciphertext into a message of theirs
// and have it shown as part of it.
TopLevel classify(const std::string &message) {
    TopLevel top;
    if (CmsPtr bare = cms_from_bare_input(message)) {
        top.structure = structure_of(bare.get());
        top.cms = std::move(bare);
        return top;
    }
    GPtr<GMimeMessage> parsed = parse_message(message);
    GMimeObject *part = parsed ? g_mime_message_get_mime_part(parsed.get()) : nullptr;
    if (!part)
        return top;
    if (GMIME_IS_MULTIPART_SIGNED(part)) {
        top.structure = Structure::multipart_signed;
        return top;
    }
    if (!is_p7m_part(part))
        return top;
    top.cms = cms_from_der(decoded_content(GMIME_PART(part)));
    clear_openssl_errors();
    if (!top.cms)
        throw Error("the application/pkcs7-mime part is not a valid CMS structure");
    top.structure = structure_of(top.cms.get());
    return top;
}

std::string describe_identifier(ASN1_OCTET_STRING *key_id, X509_NAME *issuer,
                                ASN1_INTEGER *serial) {
    if (issuer && serial) {
        char name[256];
        X509_NAME_oneline(issuer, name, sizeof name);
        BIGNUM *number = ASN1_INTEGER_to_BN(serial, nullptr);
        char *hex = number ? BN_bn2hex(number) : nullptr;
        std::string text = std::string("issuer ") + name + ", serial " + (hex ? hex : "?");
        OPENSSL_free(hex);
        BN_free(number);
        return text;
    }
    std::string text = "subject key identifier ";
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; key_id && i < ASN1_STRING_length(key_id); ++i) {
        unsigned char byte = ASN1_STRING_get0_data(key_id)[i];
        text += digits[byte >> 4];
        text += digits[byte & 0x0f];
    }
    return text;
}

std::vector<std::string> describe_recipients(CMS_ContentInfo *cms) {
    std::vector<std::string> result;
    STACK_OF(CMS_RecipientInfo) *infos = CMS_get0_RecipientInfos(cms);
    for (int i = 0; i < sk_CMS_RecipientInfo_num(infos); ++i) {
        CMS_RecipientInfo *info = sk_CMS_RecipientInfo_value(infos, i);
        ASN1_OCTET_STRING *key_id = nullptr;
        X509_NAME *issuer = nullptr;
        ASN1_INTEGER *serial = nullptr;
        int type = CMS_RecipientInfo_type(info);
        if (type == CMS_RECIPINFO_TRANS &&
            CMS_RecipientInfo_ktri_get0_signer_id(info, &key_id, &issuer, &serial))
            result.push_back(describe_identifier(key_id, issuer, serial));
        if (type != CMS_RECIPINFO_AGREE)
            continue;
        STACK_OF(CMS_RecipientEncryptedKey) *keys = CMS_RecipientInfo_kari_get0_reks(info);
        for (int k = 0; k < sk_CMS_RecipientEncryptedKey_num(keys); ++k)
            if (CMS_RecipientEncryptedKey_get0_id(sk_CMS_RecipientEncryptedKey_value(keys, k),
                                                  &key_id, nullptr, nullptr, &issuer, &serial))
                result.push_back(describe_identifier(key_id, issuer, serial));
    }
    return result;
}

bool is_recipient(CMS_ContentInfo *cms, X509 *certificate) {
    STACK_OF(CMS_RecipientInfo) *infos = CMS_get0_RecipientInfos(cms);
    for (int i = 0; i < sk_CMS_RecipientInfo_num(infos); ++i) {
        CMS_RecipientInfo *info = sk_CMS_RecipientInfo_value(infos, i);
        int type = CMS_RecipientInfo_type(info);
        if (type == CMS_RECIPINFO_TRANS && CMS_RecipientInfo_ktri_cert_cmp(info, certificate) == 0)
            return true;
        if (type != CMS_RECIPINFO_AGREE)
            continue;
        STACK_OF(CMS_RecipientEncryptedKey) *keys = CMS_RecipientInfo_kari_get0_reks(info);
        for (int k = 0; k < sk_CMS_RecipientEncryptedKey_num(keys); ++k)
            if (CMS_RecipientEncryptedKey_cert_cmp(sk_CMS_RecipientEncryptedKey_value(keys, k),
                                                   certificate) == 0)
                return true;
    }
    return false;
}

std::string layer_type(CMS_ContentInfo *cms) {
    return OBJ_obj2nid(CMS_get0_type(cms)) == NID_id_smime_ct_authEnvelopedData
               ? "authEnveloped-data"
               : "enveloped-data";
}

struct Decrypted {
    bool ok = false;
    std::string content;
    std::string detail;
};

// Decrypts the content-encryption key with key, then the content into memory, so nothing of
// an AuthEnvelopedData is released before CMS_decrypt has checked its tag.
Decrypted decrypt_content(CMS_ContentInfo *cms, const DecryptionKey &key) {
    Decrypted result;
    clear_openssl_errors();
    BioPtr out(BIO_new(BIO_s_mem()));
    if (!out)
        throw OpensslError("cannot allocate a buffer");
    if (CMS_decrypt_set1_pkey_and_peer(cms, key.key, key.certificate, nullptr) != 1 ||
        CMS_decrypt(cms, nullptr, nullptr, nullptr, out.get(), CMS_BINARY) != 1) {
        result.detail = drain_openssl_errors();
        return result;
    }
    char *data = nullptr;
    long length = BIO_get_mem_data(out.get(), &data);
    result.content.assign(data, static_cast<size_t>(length));
    result.ok = true;
    return result;
}

std::string subject_of(X509 *certificate) {
    char text[256];
    X509_NAME_oneline(X509_get_subject_name(certificate), text, sizeof text);
    return text;
}

// Puts the routing headers of the layer's message back in front of its decrypted entity.
std::string rewrap(const std::string &message, const std::string &entity) {
    SplitMessage split;
    try {
        split = split_message(message);
    } catch (const Error &) {
        return entity; // a bare CMS input has no headers to restore
    }
    std::string text;
    for (const auto &header : split.routing_headers)
        text += header.raw;
    return text + (split.crlf ? to_crlf(entity) : to_lf(entity));
}

class Unwrapper {
  public:
    Unwrapper(const KeyLookup &lookup, const VerifyOptions &options, bool verify)
        : lookup_(lookup), options_(options), verify_(verify) {}

    DecryptResult run(const std::string &message);

  private:
    bool decrypt_layer(CMS_ContentInfo *cms, std::string &current);
    bool verify_layer(const std::string &type, std::string &current);

    const KeyLookup &lookup_;
    const VerifyOptions &options_;
    bool verify_;
    DecryptResult result_;
};

bool Unwrapper::decrypt_layer(CMS_ContentInfo *cms, std::string &current) {
    Layer layer;
    layer.type = layer_type(cms);
    DecryptionKey key =
        lookup_([cms](X509 *certificate) { return is_recipient(cms, certificate); },
                describe_recipients(cms));
    layer.recipient = subject_of(key.certificate);
    Decrypted decrypted = decrypt_content(cms, key);
    result_.layers.push_back(layer);
    if (!decrypted.ok) {
        result_.failures.push_back("the message cannot be decrypted with the key of " +
                                   layer.recipient + ", or it was altered");
        result_.detail = decrypted.detail;
        return false;
    }
    current = rewrap(current, decrypted.content);
    return true;
}

bool Unwrapper::verify_layer(const std::string &type, std::string &current) {
    Layer layer;
    layer.type = type;
    layer.has_verification = true;
    layer.verification = verify_message(current, options_);
    bool valid = layer.verification.valid;
    for (const auto &failure : layer.verification.failures)
        result_.failures.push_back(failure);
    current = rewrap(current, layer.verification.content);
    result_.layers.push_back(std::move(layer));
    return valid;
}

DecryptResult Unwrapper::run(const std::string &message) {
    std::string current = message;
    bool encrypted = false;
    for (int depth = 0; depth < max_layers; ++depth) {
        TopLevel top = classify(current);
        if (top.structure == Structure::none)
            break;
        if (top.structure == Structure::enveloped) {
            encrypted = true;
            if (!decrypt_layer(top.cms.get(), current))
                return std::move(result_);
            continue;
        }
        if (!verify_)
            break;
        bool opaque = top.structure == Structure::signed_data;
        if (!verify_layer(opaque ? "signed-data" : "multipart/signed", current))
            return std::move(result_);
    }
    if (!encrypted)
        throw Error("the message is not encrypted: no enveloped-data found at its top level",
                    "use 'p11smime verify' for a message that is only signed");
    result_.content = current;
    result_.valid = result_.failures.empty();
    return std::move(result_);
}

} // namespace

DecryptResult decrypt_message(const std::string &message, const KeyLookup &lookup,
                              const VerifyOptions &verify_options, bool verify) {
    check_message_size(message);
    Unwrapper unwrapper(lookup, verify_options, verify);
    return unwrapper.run(message);
}

} // namespace p11smime
