#include "common/x509_text.h"

#include <strings.h>

#include <openssl/bn.h>

#include "common/ossl.h"

namespace p11smime {

std::string name_text(const X509_NAME *name) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253);
    return memory_bio_text(bio.get());
}

std::string subject_oneline(const X509 *certificate) {
    char text[256] = "";
    X509_NAME_oneline(X509_get_subject_name(certificate), text, sizeof text);
    return text;
}

std::string iso8601_text(const ASN1_TIME *time) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    ASN1_TIME_print_ex(bio.get(), time, ASN1_DTFLGS_ISO8601);
    return memory_bio_text(bio.get());
}

std::string serial_hex(const X509 *certificate) {
    BIGNUM *number = ASN1_INTEGER_to_BN(X509_get0_serialNumber(certificate), nullptr);
    char *hex = number ? BN_bn2hex(number) : nullptr;
    std::string text = hex ? hex : "";
    OPENSSL_free(hex);
    BN_free(number);
    return text;
}

std::vector<std::string> certificate_emails(X509 *certificate) {
    std::vector<std::string> emails;
    STACK_OF(OPENSSL_STRING) *list = X509_get1_email(certificate);
    for (int i = 0; i < sk_OPENSSL_STRING_num(list); ++i)
        emails.push_back(sk_OPENSSL_STRING_value(list, i));
    X509_email_free(list);
    return emails;
}

bool certificate_has_email(X509 *certificate, const std::string &email) {
    for (const auto &candidate : certificate_emails(certificate))
        if (strcasecmp(candidate.c_str(), email.c_str()) == 0)
            return true;
    return false;
}

} // namespace p11smime
