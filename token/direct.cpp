#include "token/direct.h"

#include <memory>

#include "token/token.h"

namespace p11smime {

DirectSession::DirectSession(const Pkcs11Context &context, PKCS11_SLOT *slot)
    : functions_(context.functions()),
      token_label_(slot->token && slot->token->label ? slot->token->label : "") {
    CK_RV rv = functions_->C_OpenSession(PKCS11_get_slotid_from_slot(slot), CKF_SERIAL_SESSION,
                                         nullptr, nullptr, &session_);
    if (rv != CKR_OK)
        throw Pkcs11Error(rv, "C_OpenSession", token_label_);
}

DirectSession::~DirectSession() {
    functions_->C_CloseSession(session_);
}

bool DirectSession::user_logged_in() const {
    CK_SESSION_INFO info{};
    if (functions_->C_GetSessionInfo(session_, &info) != CKR_OK)
        return false;
    return info.state == CKS_RO_USER_FUNCTIONS || info.state == CKS_RW_USER_FUNCTIONS;
}

namespace {

// Maximum number of certificates with one subject that a chain lookup reads. A CA renewed
// under the same name has a few; no token carries dozens.
constexpr CK_ULONG max_same_subject = 16;

struct OpensslFree {
    void operator()(unsigned char *bytes) const noexcept { OPENSSL_free(bytes); }
};

} // namespace

X509Ptr DirectSession::find_certificate(const std::optional<std::string> &label,
                                        const std::optional<std::vector<unsigned char>> &id) {
    CK_OBJECT_CLASS object_class = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE certificate_type = CKC_X_509;
    std::vector<CK_ATTRIBUTE> search = {
        {CKA_CLASS, &object_class, sizeof object_class},
        {CKA_CERTIFICATE_TYPE, &certificate_type, sizeof certificate_type}};
    if (label)
        search.push_back({CKA_LABEL, const_cast<char *>(label->data()), label->size()});
    if (id)
        search.push_back({CKA_ID, const_cast<unsigned char *>(id->data()), id->size()});
    std::vector<X509Ptr> found = find(search, 1);
    return found.empty() ? nullptr : std::move(found.front());
}

std::vector<X509Ptr> DirectSession::find_certificates_by_subject(const X509_NAME *name) {
    unsigned char *bytes = nullptr;
    int length = i2d_X509_NAME(name, &bytes);
    std::unique_ptr<unsigned char, OpensslFree> der(bytes);
    if (length <= 0)
        return {};
    CK_OBJECT_CLASS object_class = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE certificate_type = CKC_X_509;
    std::vector<CK_ATTRIBUTE> search = {
        {CKA_CLASS, &object_class, sizeof object_class},
        {CKA_CERTIFICATE_TYPE, &certificate_type, sizeof certificate_type},
        {CKA_SUBJECT, der.get(), static_cast<CK_ULONG>(length)}};
    return find(search, max_same_subject);
}

std::vector<X509Ptr> DirectSession::find(std::vector<CK_ATTRIBUTE> &search, CK_ULONG max_count) {
    CK_RV rv = functions_->C_FindObjectsInit(session_, search.data(), search.size());
    if (rv != CKR_OK)
        throw Pkcs11Error(rv, "C_FindObjectsInit (certificates)", token_label_);
    std::vector<CK_OBJECT_HANDLE> objects(max_count);
    CK_ULONG count = 0;
    rv = functions_->C_FindObjects(session_, objects.data(), max_count, &count);
    functions_->C_FindObjectsFinal(session_);
    if (rv != CKR_OK)
        throw Pkcs11Error(rv, "C_FindObjects (certificates)", token_label_);

    std::vector<X509Ptr> certificates;
    for (CK_ULONG i = 0; i < count; ++i)
        certificates.push_back(read_certificate(objects[i]));
    return certificates;
}

// Reads CKA_VALUE with the usual two calls: its length, then its bytes.
X509Ptr DirectSession::read_certificate(CK_OBJECT_HANDLE object) {
    CK_ATTRIBUTE value = {CKA_VALUE, nullptr, 0};
    CK_RV rv = functions_->C_GetAttributeValue(session_, object, &value, 1);
    if (rv != CKR_OK || value.ulValueLen == CK_UNAVAILABLE_INFORMATION)
        throw Pkcs11Error(rv, "C_GetAttributeValue (certificate value)", token_label_);
    std::vector<unsigned char> der(value.ulValueLen);
    value.pValue = der.data();
    rv = functions_->C_GetAttributeValue(session_, object, &value, 1);
    if (rv != CKR_OK)
        throw Pkcs11Error(rv, "C_GetAttributeValue (certificate value)", token_label_);
    const unsigned char *bytes = der.data();
    X509Ptr certificate(d2i_X509(nullptr, &bytes, static_cast<long>(value.ulValueLen)));
    if (!certificate)
        throw OpensslError("a certificate on token '" + token_label_ + "' is not valid DER");
    return certificate;
}

} // namespace p11smime
