#include "cms/encrypt.h"

#include <openssl/cms.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "cms/canonical.h"
#include "cms/cms_split.h"
#include "cms/gmime_ptr.h"
#include "cms/mime.h"
#include "cms/smime_output.h"
#include "common/x509_text.h"
#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {
namespace {

void check_validity(X509 *certificate, const std::string &name) {
    if (X509_cmp_current_time(X509_get0_notAfter(certificate)) < 0)
        throw Error("recipient certificate " + name + " has expired",
                    "ask the recipient for a current certificate");
    if (X509_cmp_current_time(X509_get0_notBefore(certificate)) > 0)
        throw Error("recipient certificate " + name + " is not valid yet");
}

void check_usage(X509 *certificate, int key_type, const std::string &name) {
    uint32_t flags = X509_get_extension_flags(certificate);
    if ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage(certificate) & XKU_SMIME))
        throw Error("recipient certificate " + name +
                    " has an extended key usage without emailProtection");
    if (!(flags & EXFLAG_KUSAGE))
        return;
    uint32_t usage = X509_get_key_usage(certificate);
    if (key_type == EVP_PKEY_RSA && !(usage & KU_KEY_ENCIPHERMENT))
        throw Error("recipient certificate " + name + " lacks the keyEncipherment key usage");
    if (key_type == EVP_PKEY_EC && !(usage & KU_KEY_AGREEMENT))
        throw Error("recipient certificate " + name + " lacks the keyAgreement key usage");
}

const EVP_CIPHER *content_cipher(const std::string &name) {
    static const char *const allowed[] = {"aes-128-cbc", "aes-256-cbc", "aes-128-gcm",
                                          "aes-256-gcm"};
    for (const char *entry : allowed)
        if (name == entry)
            return EVP_get_cipherbyname(entry);
    throw Error("unsupported cipher '" + name + "'",
                "use aes-128-cbc, aes-256-cbc, aes-128-gcm or aes-256-gcm");
}

void set_key_parameters(CMS_RecipientInfo *recipient, X509 *certificate, bool rsa_oaep) {
    EVP_PKEY_CTX *context = CMS_RecipientInfo_get0_pkey_ctx(recipient);
    int key_type = EVP_PKEY_get_base_id(X509_get0_pubkey(certificate));
    if (!context)
        throw OpensslError("cannot set the key parameters of a recipient");

    if (key_type == EVP_PKEY_RSA && rsa_oaep) {
        if (EVP_PKEY_CTX_set_rsa_padding(context, RSA_PKCS1_OAEP_PADDING) <= 0 ||
            EVP_PKEY_CTX_set_rsa_oaep_md(context, EVP_sha256()) <= 0 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(context, EVP_sha256()) <= 0)
            throw OpensslError("cannot select RSAES-OAEP with SHA-256");
    }
    // OpenSSL 3.0 falls back to a SHA-1 KDF for ECDH; RFC 8551 asks for SHA-256 or better.
    if (key_type == EVP_PKEY_EC && EVP_PKEY_CTX_set_ecdh_kdf_md(context, EVP_sha256()) <= 0)
        throw OpensslError("cannot select the SHA-256 KDF for ECDH");
}

// Returns an EnvelopedData, or AuthEnvelopedData for GCM, with its recipients, ready for its
// content. The flags select streaming.
CmsPtr new_enveloped_data(const EncryptOptions &options, unsigned int flags) {
    const EVP_CIPHER *cipher = content_cipher(options.cipher);
    flags |= CMS_BINARY | CMS_PARTIAL;
    CmsPtr cms(CMS_encrypt(nullptr, nullptr, cipher, flags));
    if (!cms)
        throw OpensslError("cannot create EnvelopedData");

    for (X509 *certificate : options.recipients) {
        CMS_RecipientInfo *recipient =
            CMS_add1_recipient_cert(cms.get(), certificate, flags | CMS_KEY_PARAM);
        if (!recipient)
            throw OpensslError("cannot add recipient " + subject_oneline(certificate));
        set_key_parameters(recipient, certificate, options.rsa_oaep);
    }
    return cms;
}

std::string smime_type(CMS_ContentInfo *cms) {
    bool authenticated = OBJ_obj2nid(CMS_get0_type(cms)) == NID_id_smime_ct_authEnvelopedData;
    return authenticated ? "authEnveloped-data" : "enveloped-data";
}

void encrypt_to(const MessageSource &source, BIO *out, const EncryptOptions &options,
                bool stream) {
    if (options.recipients.empty())
        throw Error("no recipient given", "name each recipient with --recipient CERT|URI");
    clear_openssl_errors();
    MessageHeaders headers = read_headers(source);
    CanonicalEntity entity(headers, source, scratch_folder(options.temp_folder));
    SmimeWriter writer(headers, out);

    if (!stream) {
        std::unique_ptr<Reader> reader = entity.open(false);
        std::string content = read_all(*reader);
        CmsPtr cms = new_enveloped_data(options, 0);
        BioPtr data(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
        if (!data || !CMS_final(cms.get(), data.get(), nullptr, CMS_BINARY))
            throw OpensslError("encryption failed");
        writer.opaque(smime_type(cms.get()), "smime.p7m", cms_der(cms.get()));
        return;
    }

    CmsPtr cms = new_enveloped_data(options, CMS_STREAM);
    writer.begin_opaque(smime_type(cms.get()), "smime.p7m");
    std::unique_ptr<Reader> content = entity.open(true);
    try {
        stream_cms(cms.get(), *content, writer.base64_body());
    } catch (const OpensslError &) {
        writer.rethrow_output_error();
        throw;
    }
    writer.end_opaque();
}

void add_addresses(InternetAddressList *list, std::vector<std::string> &addresses) {
    for (int i = 0; list && i < internet_address_list_length(list); ++i) {
        InternetAddress *address = internet_address_list_get_address(list, i);
        if (INTERNET_ADDRESS_IS_MAILBOX(address))
            addresses.push_back(
                internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(address)));
    }
}

std::vector<std::string> addresses_of(GMimeMessage *parsed) {
    std::vector<std::string> addresses;
    if (!parsed)
        return addresses;
    for (GMimeAddressType type :
         {GMIME_ADDRESS_TYPE_TO, GMIME_ADDRESS_TYPE_CC, GMIME_ADDRESS_TYPE_BCC})
        add_addresses(g_mime_message_get_addresses(parsed, type), addresses);
    return addresses;
}

} // namespace

void check_recipient_certificate(X509 *certificate, const std::string &label) {
    std::string name = "'" + label + "' (" + subject_oneline(certificate) + ")";
    int key_type = EVP_PKEY_get_base_id(X509_get0_pubkey(certificate));
    if (key_type != EVP_PKEY_RSA && key_type != EVP_PKEY_EC)
        throw Error("recipient certificate " + name + " has neither an RSA nor an EC key");
    check_validity(certificate, name);
    check_usage(certificate, key_type, name);
}

std::string encrypt_message(const std::string &message, const EncryptOptions &options) {
    MessageSource source = MessageSource::from_memory(message);
    BioPtr out(BIO_new(BIO_s_mem()));
    if (!out)
        throw OpensslError("cannot allocate a buffer");
    encrypt_to(source, out.get(), options, false);
    return memory_bio_text(out.get());
}

void encrypt_stream(const MessageSource &source, BIO *out, const EncryptOptions &options) {
    encrypt_to(source, out, options, true);
}

std::vector<std::string> recipient_addresses(const std::string &message) {
    return addresses_of(parse_message(message).get());
}

std::vector<std::string> recipient_addresses(const MessageSource &source) {
    MessageHeaders headers = read_headers(source);
    std::string block;
    for (const auto &header : headers.routing_headers)
        block += header.raw;
    return recipient_addresses(block + (headers.crlf ? "\r\n" : "\n"));
}

} // namespace p11smime
