// Listing of modules, slots, tokens and objects for `p11smime list` and `p11smime doctor`.
#include <algorithm>
#include <cstring>

#include <openssl/bio.h>
#include <openssl/x509v3.h>

#include "token/objects.h"
#include "common/x509_text.h"

namespace p11smime {
namespace {

using BioMemPtr = BioPtr;

std::vector<std::string> key_usage_names(X509 *certificate) {
    struct UsageName {
        uint32_t bit;
        const char *name;
    };
    static const UsageName names[] = {
        {KU_DIGITAL_SIGNATURE, "digitalSignature"}, {KU_NON_REPUDIATION, "nonRepudiation"},
        {KU_KEY_ENCIPHERMENT, "keyEncipherment"},   {KU_DATA_ENCIPHERMENT, "dataEncipherment"},
        {KU_KEY_AGREEMENT, "keyAgreement"},         {KU_KEY_CERT_SIGN, "keyCertSign"},
        {KU_CRL_SIGN, "cRLSign"},
    };
    std::vector<std::string> result;
    uint32_t usage = X509_get_key_usage(certificate);
    if (usage == UINT32_MAX)
        return result; // no keyUsage extension: any use is allowed
    for (const auto &entry : names)
        if (usage & entry.bit)
            result.push_back(entry.name);
    return result;
}

Pkcs11Uri token_uri(const PKCS11_TOKEN *token) {
    Pkcs11Uri uri;
    uri.token = token->label;
    uri.manufacturer = token->manufacturer;
    uri.model = token->model;
    uri.serial = token->serialnr;
    return uri;
}

std::string object_uri(const PKCS11_TOKEN *token, const char *label, const unsigned char *id,
                       size_t id_length, const char *type) {
    Pkcs11Uri uri;
    uri.token = token->label;
    uri.serial = token->serialnr;
    if (label && *label)
        uri.object = label;
    if (id_length)
        uri.id.emplace(id, id + id_length);
    uri.type = type;
    return uri.to_string();
}

CertificateInfo describe_certificate(const PKCS11_TOKEN *token, const PKCS11_CERT &cert) {
    CertificateInfo info;
    info.uri = object_uri(token, cert.label, cert.id, cert.id_len, "cert");
    info.key_uri = object_uri(token, nullptr, cert.id, cert.id_len, "private");
    info.label = cert.label ? cert.label : "";
    info.id_hex = hex_id(cert.id, cert.id_len);
    if (!cert.x509)
        return info;
    info.subject = name_text(X509_get_subject_name(cert.x509));
    info.issuer = name_text(X509_get_issuer_name(cert.x509));
    info.emails = certificate_emails(cert.x509);
    info.not_before = iso8601_text(X509_get0_notBefore(cert.x509));
    info.not_after = iso8601_text(X509_get0_notAfter(cert.x509));
    info.key_usage = key_usage_names(cert.x509);
    int length = i2d_X509(cert.x509, nullptr);
    if (length > 0) {
        info.der.resize(static_cast<size_t>(length));
        unsigned char *cursor = info.der.data();
        i2d_X509(cert.x509, &cursor);
    }
    return info;
}

bool same_id(const PKCS11_CERT &cert, const PKCS11_KEY &key) {
    return cert.id_len == key.id_len && std::memcmp(cert.id, key.id, key.id_len) == 0;
}

bool has_public_key_of(PKCS11_KEY &key, X509 *certificate) {
    clear_openssl_errors();
    EvpPkeyPtr public_key(PKCS11_get_public_key(&key));
    clear_openssl_errors();
    return public_key && certificate &&
           EVP_PKEY_eq(public_key.get(), X509_get0_pubkey(certificate)) == 1;
}

// Records which key objects share the certificate's CKA_ID and whether one of them has the
// certificate's public key.
void match_keys(const PKCS11_CERT &cert, PKCS11_KEY *keys, unsigned int count, bool is_private,
                CertificateInfo &info) {
    for (unsigned int i = 0; i < count; ++i) {
        if (!same_id(cert, keys[i]))
            continue;
        (is_private ? info.has_private_key : info.has_public_key) = true;
        info.key_matches = info.key_matches || has_public_key_of(keys[i], cert.x509);
    }
}

void describe_public_key(PKCS11_KEY &key, KeyInfo &info) {
    clear_openssl_errors();
    EvpPkeyPtr public_key(PKCS11_get_public_key(&key));
    clear_openssl_errors();
    if (!public_key)
        return; // NOTE: some tokens hide the public half; the key is listed without its size.
    info.bits = EVP_PKEY_get_bits(public_key.get());
    char group[64] = "";
    size_t length = 0;
    if (EVP_PKEY_get_group_name(public_key.get(), group, sizeof group, &length))
        info.curve = group;
}

KeyInfo describe_key(const PKCS11_TOKEN *token, PKCS11_KEY &key, bool is_private) {
    KeyInfo info;
    info.is_private = is_private;
    info.uri = object_uri(token, key.label, key.id, key.id_len, is_private ? "private" : "public");
    info.label = key.label ? key.label : "";
    info.id_hex = hex_id(key.id, key.id_len);
    int type = PKCS11_get_key_type(&key);
    info.algorithm = type == EVP_PKEY_RSA ? "RSA" : type == EVP_PKEY_EC ? "EC" : "other";
    describe_public_key(key, info);
    return info;
}

void list_objects(PKCS11_SLOT *slot, SlotInfo &info) {
    PKCS11_TOKEN *token = slot->token;
    PKCS11_CERT *certs = nullptr;
    unsigned int cert_count = 0;
    if (PKCS11_enumerate_certs(token, &certs, &cert_count) != 0)
        cert_count = 0;
    for (unsigned int i = 0; i < cert_count; ++i)
        info.certificates.push_back(describe_certificate(token, certs[i]));

    PKCS11_KEY *keys = nullptr;
    unsigned int count = 0;
    if (PKCS11_enumerate_keys(token, &keys, &count) == 0) {
        for (unsigned int i = 0; i < count; ++i)
            info.keys.push_back(describe_key(token, keys[i], true));
        for (unsigned int i = 0; i < cert_count; ++i)
            match_keys(certs[i], keys, count, true, info.certificates[i]);
    }

    if (PKCS11_enumerate_public_keys(token, &keys, &count) == 0) {
        for (unsigned int i = 0; i < count; ++i)
            info.keys.push_back(describe_key(token, keys[i], false));
        for (unsigned int i = 0; i < cert_count; ++i)
            match_keys(certs[i], keys, count, false, info.certificates[i]);
    }
    clear_openssl_errors();
}

std::vector<std::string> token_flags(const PKCS11_TOKEN *token) {
    std::vector<std::string> flags;
    auto add = [&flags](bool set, const char *name) {
        if (set)
            flags.push_back(name);
    };
    add(token->loginRequired, "login-required");
    add(token->secureLogin, "protected-authentication-path");
    add(token->readOnly, "write-protected");
    add(!token->initialized, "not-initialized");
    add(!token->userPinSet, "user-pin-not-initialized");
    add(token->userPinCountLow, "user-pin-count-low");
    add(token->userPinFinalTry, "user-pin-final-try");
    add(token->userPinLocked, "user-pin-locked");
    add(token->userPinToBeChanged, "user-pin-to-be-changed");
    return flags;
}

SlotInfo describe_slot_and_token(PKCS11_SLOT *slot) {
    SlotInfo info;
    info.slot_id = PKCS11_get_slotid_from_slot(slot);
    info.description = slot->description ? slot->description : "";
    info.manufacturer = slot->manufacturer ? slot->manufacturer : "";
    PKCS11_TOKEN *token = slot->token;
    if (!token)
        return info;

    info.token_present = true;
    info.token_uri = token_uri(token).to_string();
    info.label = token->label;
    info.token_manufacturer = token->manufacturer;
    info.model = token->model;
    info.serial = token->serialnr;
    info.flags = token_flags(token);
    return info;
}

SlotInfo describe_slot(Pkcs11Context &context, PKCS11_SLOT *slot, const TokenOptions &options,
                       bool login_to_token) {
    SlotInfo info = describe_slot_and_token(slot);
    PKCS11_TOKEN *token = slot->token;
    if (!token)
        return info;

    // libp11 0.4.12 waits forever when it opens a session on a token that is not
    // initialised (SoftHSM always offers one), so such a token is listed without objects.
    if (!token->initialized)
        return info;

    if (login_to_token && token->loginRequired) {
        login(context, slot, nullptr, options);
        info.logged_in = true;
    }
    list_objects(slot, info);
    return info;
}

} // namespace

std::string hex_id(const unsigned char *id, size_t length) {
    static const char digits[] = "0123456789abcdef";
    std::string text;
    for (size_t i = 0; i < length; ++i) {
        text += digits[id[i] >> 4];
        text += digits[id[i] & 0x0f];
    }
    return text;
}

namespace {

ModuleInfo describe_module(Pkcs11Context &context) {
    ModuleInfo info;
    info.path = context.path();
    info.manufacturer = context.ctx()->manufacturer ? context.ctx()->manufacturer : "";
    info.description = context.ctx()->description ? context.ctx()->description : "";
    return info;
}

// Logs in if asked, keeping a failure instead of raising it, and lists the token's objects.
void inspect_token(Pkcs11Context &context, PKCS11_SLOT *slot, const Pkcs11Uri *filter,
                   const TokenOptions &options, bool login_to_token, SlotInfo &info) {
    if (login_to_token && slot->token->loginRequired) {
        try {
            login(context, slot, filter, options);
            info.logged_in = true;
        } catch (const Error &error) {
            info.login_error = error.what();
        }
    }
    list_objects(slot, info);
    info.objects_listed = true;
}

} // namespace

ModuleInfo list_module_slots(const std::string &module_path) {
    Pkcs11Context context(module_path);
    ModuleInfo info = describe_module(context);
    for (unsigned int i = 0; i < context.slot_count(); ++i)
        info.slots.push_back(describe_slot_and_token(&context.slots()[i]));
    return info;
}

ModuleInfo inspect_tokens(const std::string &module_path, const TokenOptions &options,
                          const Pkcs11Uri *filter, bool login) {
    Pkcs11Context context(module_path);
    ModuleInfo info = describe_module(context);
    std::vector<PKCS11_SLOT *> selected = matching_slots(context, filter ? *filter : Pkcs11Uri());
    for (unsigned int i = 0; i < context.slot_count(); ++i) {
        PKCS11_SLOT *slot = &context.slots()[i];
        SlotInfo slot_info = describe_slot_and_token(slot);
        if (std::find(selected.begin(), selected.end(), slot) != selected.end())
            inspect_token(context, slot, filter, options, login, slot_info);
        info.slots.push_back(std::move(slot_info));
    }
    return info;
}

ModuleInfo list_module(const std::string &module_path, const TokenOptions &options, bool login) {
    Pkcs11Context context(module_path);
    ModuleInfo info = describe_module(context);

    unsigned int need_login = 0;
    for (unsigned int i = 0; i < context.slot_count(); ++i) {
        const PKCS11_TOKEN *token = context.slots()[i].token;
        need_login += token && token->initialized && token->loginRequired;
    }
    if (login && need_login > 1 && !options.prompt_pin)
        throw Error(std::to_string(need_login) + " tokens need a login and the PIN is not typed",
                    "one PIN file would be tried on every token; run in a terminal instead");

    for (unsigned int i = 0; i < context.slot_count(); ++i)
        info.slots.push_back(describe_slot(context, &context.slots()[i], options, login));
    return info;
}

} // namespace p11smime
