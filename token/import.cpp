#include "token/import.h"
#include "common/x509_text.h"

#include <cstring>

#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "token/objects.h"

namespace p11smime {
namespace {

struct KeyMatch {
    std::vector<unsigned char> id;
    std::string label;
};

bool same_public_key(PKCS11_KEY &key, EVP_PKEY *wanted) {
    clear_openssl_errors();
    EvpPkeyPtr public_key(PKCS11_get_public_key(&key));
    clear_openssl_errors();
    return public_key && EVP_PKEY_eq(public_key.get(), wanted) == 1;
}

// Finds the key pair whose public key is the certificate's, looking at private keys first and
// then at public key objects, because some tokens keep only one of the two readable.
std::optional<KeyMatch> find_matching_key(PKCS11_TOKEN *token, X509 *certificate) {
    EVP_PKEY *wanted = X509_get0_pubkey(certificate);
    if (!wanted)
        throw OpensslError("cannot read the certificate's public key");

    using Enumerate = int (*)(PKCS11_TOKEN *, PKCS11_KEY **, unsigned int *);
    for (Enumerate enumerate : {Enumerate(PKCS11_enumerate_keys),
                                Enumerate(PKCS11_enumerate_public_keys)}) {
        PKCS11_KEY *keys = nullptr;
        unsigned int count = 0;
        if (enumerate(token, &keys, &count) != 0)
            throw Pkcs11Error(take_ckr_code(), "C_FindObjects (keys)", token_label(token));
        for (unsigned int i = 0; i < count; ++i)
            if (same_public_key(keys[i], wanted))
                return KeyMatch{{keys[i].id, keys[i].id + keys[i].id_len},
                                keys[i].label ? keys[i].label : ""};
    }
    return std::nullopt;
}

// Returns the SHA-1 hash of the subjectPublicKey BIT STRING, the usual key identifier.
std::vector<unsigned char> public_key_hash(X509 *certificate) {
    std::vector<unsigned char> digest(SHA_DIGEST_LENGTH);
    unsigned int length = 0;
    if (!X509_pubkey_digest(certificate, EVP_sha1(), digest.data(), &length))
        throw OpensslError("cannot hash the certificate's public key");
    digest.resize(length);
    return digest;
}

std::string common_name(X509 *certificate) {
    char text[256] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(certificate), NID_commonName, text,
                              sizeof text);
    return text;
}

std::vector<PKCS11_CERT *> stored_certificates(PKCS11_TOKEN *token) {
    PKCS11_CERT *certs = nullptr;
    unsigned int count = 0;
    if (PKCS11_enumerate_certs(token, &certs, &count) != 0)
        throw Pkcs11Error(take_ckr_code(), "C_FindObjects (certificates)", token_label(token));
    std::vector<PKCS11_CERT *> result;
    for (unsigned int i = 0; i < count; ++i)
        result.push_back(&certs[i]);
    return result;
}

bool is_stored(PKCS11_TOKEN *token, X509 *certificate) {
    for (PKCS11_CERT *stored : stored_certificates(token))
        if (stored->x509 && X509_cmp(stored->x509, certificate) == 0)
            return true;
    return false;
}

std::vector<PKCS11_CERT *> certificates_with_id(PKCS11_TOKEN *token,
                                                const std::vector<unsigned char> &id) {
    std::vector<PKCS11_CERT *> result;
    for (PKCS11_CERT *stored : stored_certificates(token))
        if (stored->id_len == id.size() && std::memcmp(stored->id, id.data(), id.size()) == 0)
            result.push_back(stored);
    return result;
}

void store(PKCS11_TOKEN *token, X509 *certificate, const std::string &label,
           const std::vector<unsigned char> &id) {
    clear_openssl_errors();
    std::vector<unsigned char> id_copy = id;
    if (PKCS11_store_certificate(token, certificate, const_cast<char *>(label.c_str()),
                                 id_copy.empty() ? nullptr : id_copy.data(), id_copy.size(),
                                 nullptr) != 0)
        throw Pkcs11Error(take_ckr_code(), "C_CreateObject (certificate)", token_label(token));
}

// Removes the token's other certificates for the key, or refuses to keep two: a signer would
// then pick one of them by chance.
int remove_previous(PKCS11_TOKEN *token, X509 *certificate, const std::vector<unsigned char> &id,
                    bool replace) {
    std::vector<PKCS11_CERT *> previous = certificates_with_id(token, id);
    if (previous.empty())
        return 0;
    if (!replace)
        throw Error("token '" + token_label(token) + "' already has a certificate for CKA_ID " +
                        hex_id(id.data(), id.size()) + ": " +
                        (previous[0]->x509 ? subject_oneline(previous[0]->x509) : "unreadable"),
                    "add --replace to remove it and store " + subject_oneline(certificate));
    // libp11 finds the object to destroy by CKA_ID and CKA_LABEL, and its certificate list
    // may change on removal, so each removal takes a fresh entry from a fresh list.
    int removed = 0;
    for (size_t i = 0; i < previous.size(); ++i) {
        std::vector<PKCS11_CERT *> current = certificates_with_id(token, id);
        if (current.empty())
            break;
        clear_openssl_errors();
        if (PKCS11_remove_certificate(current.front()) != 0)
            throw Pkcs11Error(take_ckr_code(), "C_DestroyObject (certificate)",
                              token_label(token));
        ++removed;
    }
    return removed;
}

int store_chain(PKCS11_TOKEN *token, STACK_OF(X509) * chain) {
    int stored = 0;
    for (int i = 0; chain && i < sk_X509_num(chain); ++i) {
        X509 *issuer = sk_X509_value(chain, i);
        if (is_stored(token, issuer))
            continue;
        store(token, issuer, common_name(issuer), {});
        ++stored;
    }
    return stored;
}

PKCS11_SLOT *find_slot(Pkcs11Context &context, const Pkcs11Uri &uri) {
    std::vector<PKCS11_SLOT *> slots = matching_slots(context, uri);
    if (slots.empty())
        throw Error("no initialised token matching '" + uri.to_string() + "' in module '" +
                        context.path() + "'",
                    "insert the token, or run 'p11smime list' to see the tokens present");
    if (slots.size() > 1)
        throw Error("token URI '" + uri.to_string() + "' matches " +
                        std::to_string(slots.size()) + " tokens",
                    "add token= or serial= to the URI so it names one token");
    return slots.front();
}

std::string object_uri(PKCS11_TOKEN *token, const std::string &label,
                       const std::vector<unsigned char> &id, const char *type) {
    Pkcs11Uri uri;
    uri.token = token->label;
    uri.serial = token->serialnr;
    if (!label.empty())
        uri.object = label;
    if (!id.empty())
        uri.id = id;
    uri.type = type;
    return uri.to_string();
}

} // namespace

ImportResult import_certificate(const ImportRequest &request, const TokenOptions &options) {
    Pkcs11Context context(choose_module(&request.token_uri, options));
    PKCS11_SLOT *slot = find_slot(context, request.token_uri);
    PKCS11_TOKEN *token = slot->token;
    if (token->readOnly)
        throw Error("token '" + token_label(token) + "' is write-protected");
    // libp11 opens read-only sessions unless asked first; changing the mode later closes
    // every session of the slot, which logs out.
    clear_openssl_errors();
    if (PKCS11_open_session(slot, 1) != 0)
        throw Pkcs11Error(take_ckr_code(), "C_OpenSession (read-write)", token_label(token));
    login(context, slot, &request.token_uri, options);

    std::optional<KeyMatch> key = find_matching_key(token, request.certificate);
    if (!key && !request.force)
        throw Error("certificate " + subject_oneline(request.certificate) +
                        " matches no key on token '" + token_label(token) + "'",
                    "import it into the token that holds its key, or add --force to store "
                    "it anyway");

    if (key && request.id && *request.id != key->id)
        throw Error("the certificate matches the key with CKA_ID " +
                        hex_id(key->id.data(), key->id.size()) + ", not the --id given",
                    "leave out --id; it is only for a certificate that matches no key");

    ImportResult result;
    std::vector<unsigned char> id = key ? key->id
                                        : request.id ? *request.id
                                                     : public_key_hash(request.certificate);
    result.label = request.label ? *request.label
                                 : key && !key->label.empty() ? key->label
                                                              : common_name(request.certificate);
    result.id_hex = hex_id(id.data(), id.size());
    result.certificate_uri = object_uri(token, result.label, id, "cert");
    if (key)
        result.key_uri = object_uri(token, key->label, id, "private");

    if (is_stored(token, request.certificate)) {
        result.already_present = true;
    } else {
        result.replaced = remove_previous(token, request.certificate, id, request.replace);
        store(token, request.certificate, result.label, id);
    }
    result.chain_stored = store_chain(token, request.chain);
    return result;
}

} // namespace p11smime
