// Pkcs11Error and the names of PKCS#11 return values.
#include <cstdio>

#include <p11-kit/pkcs11.h>

#include "token/token.h"

namespace p11smime {
namespace {

struct ReturnValueName {
    unsigned long rv;
    const char *name;
};

#define P11SMIME_CKR(name) {name, #name}

// The return values a signing or decrypting tool meets in practice (PKCS#11 v2.40, 11.1).
constexpr ReturnValueName return_value_names[] = {
    P11SMIME_CKR(CKR_OK),
    P11SMIME_CKR(CKR_CANCEL),
    P11SMIME_CKR(CKR_HOST_MEMORY),
    P11SMIME_CKR(CKR_SLOT_ID_INVALID),
    P11SMIME_CKR(CKR_GENERAL_ERROR),
    P11SMIME_CKR(CKR_FUNCTION_FAILED),
    P11SMIME_CKR(CKR_ARGUMENTS_BAD),
    P11SMIME_CKR(CKR_ATTRIBUTE_SENSITIVE),
    P11SMIME_CKR(CKR_ATTRIBUTE_TYPE_INVALID),
    P11SMIME_CKR(CKR_DATA_INVALID),
    P11SMIME_CKR(CKR_DATA_LEN_RANGE),
    P11SMIME_CKR(CKR_DEVICE_ERROR),
    P11SMIME_CKR(CKR_DEVICE_MEMORY),
    P11SMIME_CKR(CKR_DEVICE_REMOVED),
    P11SMIME_CKR(CKR_ENCRYPTED_DATA_INVALID),
    P11SMIME_CKR(CKR_ENCRYPTED_DATA_LEN_RANGE),
    P11SMIME_CKR(CKR_FUNCTION_CANCELED),
    P11SMIME_CKR(CKR_FUNCTION_NOT_SUPPORTED),
    P11SMIME_CKR(CKR_KEY_HANDLE_INVALID),
    P11SMIME_CKR(CKR_KEY_SIZE_RANGE),
    P11SMIME_CKR(CKR_KEY_TYPE_INCONSISTENT),
    P11SMIME_CKR(CKR_KEY_FUNCTION_NOT_PERMITTED),
    P11SMIME_CKR(CKR_MECHANISM_INVALID),
    P11SMIME_CKR(CKR_MECHANISM_PARAM_INVALID),
    P11SMIME_CKR(CKR_OBJECT_HANDLE_INVALID),
    P11SMIME_CKR(CKR_OPERATION_ACTIVE),
    P11SMIME_CKR(CKR_OPERATION_NOT_INITIALIZED),
    P11SMIME_CKR(CKR_PIN_INCORRECT),
    P11SMIME_CKR(CKR_PIN_INVALID),
    P11SMIME_CKR(CKR_PIN_LEN_RANGE),
    P11SMIME_CKR(CKR_PIN_EXPIRED),
    P11SMIME_CKR(CKR_PIN_LOCKED),
    P11SMIME_CKR(CKR_SESSION_CLOSED),
    P11SMIME_CKR(CKR_SESSION_COUNT),
    P11SMIME_CKR(CKR_SESSION_HANDLE_INVALID),
    P11SMIME_CKR(CKR_SESSION_READ_ONLY),
    P11SMIME_CKR(CKR_SIGNATURE_INVALID),
    P11SMIME_CKR(CKR_SIGNATURE_LEN_RANGE),
    P11SMIME_CKR(CKR_TOKEN_NOT_PRESENT),
    P11SMIME_CKR(CKR_TOKEN_NOT_RECOGNIZED),
    P11SMIME_CKR(CKR_USER_ALREADY_LOGGED_IN),
    P11SMIME_CKR(CKR_USER_NOT_LOGGED_IN),
    P11SMIME_CKR(CKR_USER_PIN_NOT_INITIALIZED),
    P11SMIME_CKR(CKR_USER_TYPE_INVALID),
    P11SMIME_CKR(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    P11SMIME_CKR(CKR_USER_TOO_MANY_TYPES),
    P11SMIME_CKR(CKR_BUFFER_TOO_SMALL),
    P11SMIME_CKR(CKR_CRYPTOKI_NOT_INITIALIZED),
    P11SMIME_CKR(CKR_CRYPTOKI_ALREADY_INITIALIZED),
};

#undef P11SMIME_CKR

std::string describe(unsigned long rv, const std::string &operation,
                     const std::string &token_label) {
    std::string message = operation + " failed";
    if (!token_label.empty())
        message += " on token '" + token_label + "'";
    return message + ": " + ckr_name(rv);
}

} // namespace

std::string ckr_name(unsigned long rv) {
    for (const auto &entry : return_value_names)
        if (entry.rv == rv)
            return entry.name;
    char hex[32];
    std::snprintf(hex, sizeof hex, "CKR 0x%08lx", rv);
    return hex;
}

Pkcs11Error::Pkcs11Error(unsigned long rv, const std::string &operation,
                         const std::string &token_label, std::string hint)
    : Error(describe(rv, operation, token_label), std::move(hint)), rv_(rv) {}

} // namespace p11smime
