#include "cms/certificate_request.h"

#include <memory>
#include <vector>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {
namespace {

using X509ReqPtr = std::unique_ptr<X509_REQ, CDeleter<X509_REQ_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, CDeleter<X509_NAME_free>>;
using ExtensionPtr = std::unique_ptr<X509_EXTENSION, CDeleter<X509_EXTENSION_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, CDeleter<GENERAL_NAMES_free>>;

inline void free_extensions(STACK_OF(X509_EXTENSION) * stack) noexcept {
    sk_X509_EXTENSION_pop_free(stack, X509_EXTENSION_free);
}
using ExtensionStackPtr = std::unique_ptr<STACK_OF(X509_EXTENSION), CDeleter<free_extensions>>;

// Checks the form local@domain with printable ASCII and no spaces. An internationalised
// local part needs SmtpUTF8Mailbox (RFC 8398) instead of rfc822Name.
void check_email(const std::string &email) {
    size_t at = email.find('@');
    bool valid = at != std::string::npos && at > 0 && at + 1 < email.size() &&
                 email.find('@', at + 1) == std::string::npos;
    for (unsigned char c : email)
        valid = valid && c > 0x20 && c < 0x7f;
    if (!valid)
        throw Error("invalid email address '" + email + "'",
                    "give an ASCII address of the form name@example.org");
}

// Splits "/type=value/type=value" at each '/' that no backslash escapes.
std::vector<std::string> subject_parts(const std::string &subject) {
    std::vector<std::string> parts;
    std::string current;
    for (size_t i = 1; i < subject.size(); ++i) {
        if (subject[i] == '\\' && i + 1 < subject.size()) {
            current += subject[++i];
        } else if (subject[i] == '/') {
            parts.push_back(current);
            current.clear();
        } else {
            current += subject[i];
        }
    }
    parts.push_back(current);
    return parts;
}

X509NamePtr parse_subject(const std::string &subject) {
    if (subject.size() < 2 || subject[0] != '/')
        throw Error("invalid subject '" + subject + "'",
                    "write it as /type=value/..., such as '/CN=Alice Example/O=Example Ltd'");
    X509NamePtr name(X509_NAME_new());
    for (const std::string &part : subject_parts(subject)) {
        size_t equals = part.find('=');
        if (equals == std::string::npos || equals == 0 || equals + 1 == part.size())
            throw Error("invalid subject component '" + part + "' in '" + subject + "'",
                        "write each component as type=value, such as CN=Alice Example");
        std::string type = part.substr(0, equals);
        std::string value = part.substr(equals + 1);
        auto *bytes = reinterpret_cast<const unsigned char *>(value.c_str());
        if (!X509_NAME_add_entry_by_txt(name.get(), type.c_str(), MBSTRING_UTF8, bytes, -1, -1,
                                        0))
            throw OpensslError("invalid subject attribute '" + type + "'",
                               "use an attribute name such as CN, O, OU, C or emailAddress");
    }
    return name;
}

X509NamePtr default_subject(const std::string &email) {
    X509NamePtr name(X509_NAME_new());
    auto *bytes = reinterpret_cast<const unsigned char *>(email.c_str());
    if (!name || !X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8, bytes,
                                             -1, -1, 0))
        throw OpensslError("cannot make the subject CN=" + email);
    return name;
}

ExtensionPtr email_alt_name(const std::string &email) {
    GeneralNamesPtr names(GENERAL_NAMES_new());
    GENERAL_NAME *name = GENERAL_NAME_new();
    ASN1_IA5STRING *address = ASN1_IA5STRING_new();
    if (!names || !name || !address ||
        !ASN1_STRING_set(address, email.data(), static_cast<int>(email.size()))) {
        GENERAL_NAME_free(name);
        ASN1_IA5STRING_free(address);
        throw OpensslError("cannot make the subjectAltName");
    }
    GENERAL_NAME_set0_value(name, GEN_EMAIL, address);
    sk_GENERAL_NAME_push(names.get(), name);
    ExtensionPtr extension(X509V3_EXT_i2d(NID_subject_alt_name, 0, names.get()));
    if (!extension)
        throw OpensslError("cannot encode the subjectAltName");
    return extension;
}

std::string key_usage_value(EVP_PKEY *key, CertificateUse use) {
    std::string value = "critical";
    if (use != CertificateUse::encryption)
        value += ",digitalSignature,nonRepudiation";
    if (use != CertificateUse::signing)
        value += EVP_PKEY_get_base_id(key) == EVP_PKEY_EC ? ",keyAgreement" : ",keyEncipherment";
    return value;
}

ExtensionPtr configured_extension(int nid, const std::string &value) {
    ExtensionPtr extension(X509V3_EXT_conf_nid(nullptr, nullptr, nid, value.c_str()));
    if (!extension)
        throw OpensslError("cannot make the extension " + std::string(OBJ_nid2sn(nid)));
    return extension;
}

void add_extensions(X509_REQ *request, EVP_PKEY *key, const CertificateRequestOptions &options) {
    ExtensionStackPtr extensions(sk_X509_EXTENSION_new_null());
    sk_X509_EXTENSION_push(extensions.get(), email_alt_name(options.email).release());
    sk_X509_EXTENSION_push(
        extensions.get(),
        configured_extension(NID_key_usage, key_usage_value(key, options.use)).release());
    sk_X509_EXTENSION_push(
        extensions.get(), configured_extension(NID_ext_key_usage, "emailProtection").release());
    if (!X509_REQ_add_extensions(request, extensions.get()))
        throw OpensslError("cannot add the extensions to the request");
}

// SHA-384 for P-384, as for signing mail: some verifiers reject a P-384 signature over a
// 256-bit hash.
const EVP_MD *request_digest(EVP_PKEY *key) {
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC && EVP_PKEY_get_bits(key) > 256)
        return EVP_sha384();
    return EVP_sha256();
}

std::string pem_of(X509_REQ *request) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || !PEM_write_bio_X509_REQ(bio.get(), request))
        throw OpensslError("cannot write the request as PEM");
    return memory_bio_text(bio.get());
}

} // namespace

std::string make_certificate_request(EVP_PKEY *key, const CertificateRequestOptions &options) {
    check_email(options.email);
    clear_openssl_errors();
    X509NamePtr subject =
        options.subject ? parse_subject(*options.subject) : default_subject(options.email);

    X509ReqPtr request(X509_REQ_new());
    if (!request || !X509_REQ_set_version(request.get(), X509_REQ_VERSION_1) ||
        !X509_REQ_set_subject_name(request.get(), subject.get()) ||
        !X509_REQ_set_pubkey(request.get(), key))
        throw OpensslError("cannot fill in the certificate request");
    add_extensions(request.get(), key, options);

    if (X509_REQ_sign(request.get(), key, request_digest(key)) <= 0)
        throw OpensslError("signing the certificate request with the token key failed");
    if (X509_REQ_verify(request.get(), X509_REQ_get0_pubkey(request.get())) != 1)
        throw OpensslError("the token key made a request signature that does not verify");
    return pem_of(request.get());
}

} // namespace p11smime
