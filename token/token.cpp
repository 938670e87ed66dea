#include "token/token.h"

#include <cstdlib>
#include <cstring>

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <p11-kit/pkcs11.h>

#include "token/context.h"
#include "token/direct.h"
#include "token/objects.h"

namespace p11smime {

unsigned long take_ckr_code() {
    int library = ERR_get_CKR_code();
    unsigned long rv = CKR_FUNCTION_FAILED;
    while (unsigned long error = ERR_get_error())
        if (ERR_GET_LIB(error) == library)
            rv = ERR_GET_REASON(error);
    return rv;
}

std::string token_label(const PKCS11_TOKEN *token) {
    return token->label ? token->label : "";
}

namespace {

bool matches(const std::optional<std::string> &wanted, const char *actual) {
    return !wanted || (actual && *wanted == actual);
}

bool token_matches(const Pkcs11Uri &uri, PKCS11_SLOT *slot) {
    const PKCS11_TOKEN *token = slot->token;
    if (!token || !token->initialized)
        return false;
    if (uri.slot_id && *uri.slot_id != PKCS11_get_slotid_from_slot(slot))
        return false;
    return matches(uri.token, token->label) && matches(uri.manufacturer, token->manufacturer) &&
           matches(uri.serial, token->serialnr) && matches(uri.model, token->model);
}

bool key_matches(const Pkcs11Uri &uri, const PKCS11_KEY &key) {
    if (uri.object && !(key.label && *uri.object == key.label))
        return false;
    if (uri.id &&
        !(uri.id->size() == key.id_len && std::memcmp(uri.id->data(), key.id, key.id_len) == 0))
        return false;
    return true;
}

void check_pin_flags(const std::string &label, const PinState &state, bool interactive,
                     const TokenOptions &options) {
    if (state.locked)
        throw Error("the user PIN of token '" + label + "' is locked (CKF_USER_PIN_LOCKED)",
                    "unblock it with the security officer PIN or the card's PUK");
    if (state.final_try && !interactive)
        throw Error("token '" + label +
                        "' has one PIN try left (CKF_USER_PIN_FINAL_TRY); "
                        "p11smime does not spend it without a person at the keyboard",
                    "run the command in a terminal without --pin-file, or unblock the PIN");
    if (state.final_try && options.warn)
        options.warn("token '" + label + "' has one PIN try left; a wrong PIN locks it");
    else if (state.count_low && options.warn)
        options.warn("token '" + label + "' has few PIN tries left (CKF_USER_PIN_COUNT_LOW)");
}

// Obtains the PIN from, in order: --pin-file, the URI's pin-source, the URI's pin-value, and
// the interactive prompt. Sets interactive when a person typed it.
SecurePin obtain_pin(const Pkcs11Uri *uri, const TokenOptions &options, const std::string &label,
                     bool &interactive) {
    interactive = false;
    std::optional<std::string> file = options.pin_file;
    if (!file && uri && uri->pin_source)
        file = pin_source_path(*uri->pin_source);

    if (file) {
        bool readable_by_others = false;
        SecurePin pin = read_pin_file(*file, readable_by_others);
        if (readable_by_others && options.warn)
            options.warn("PIN file '" + *file +
                         "' is readable by group or others; "
                         "restrict it with chmod 600");
        return pin;
    }

    if (uri && uri->pin_value) {
        if (options.warn)
            options.warn("the PIN in the URI's pin-value is visible in the process list; "
                         "prefer --pin-file or pin-source");
        return SecurePin(std::vector<char>(uri->pin_value->begin(), uri->pin_value->end()));
    }

    if (options.prompt_pin) {
        interactive = true;
        return options.prompt_pin(label);
    }
    throw Error("token '" + label + "' needs a PIN and none was given",
                "pass --pin-file FILE, or run in a terminal to be asked for it");
}

// Decides whether a PIN source other than the prompt exists, before any PIN is read, so the
// final-try check can refuse without reading a file.
bool pin_is_interactive(const Pkcs11Uri *uri, const TokenOptions &options) {
    if (options.pin_file || (uri && (uri->pin_source || uri->pin_value)))
        return false;
    return static_cast<bool>(options.prompt_pin);
}

} // namespace

void check_pin_state(const std::string &label, const PinState &state, const Pkcs11Uri *uri,
                     const TokenOptions &options) {
    check_pin_flags(label, state, pin_is_interactive(uri, options), options);
}

SecurePin obtain_login_pin(const std::string &label, const Pkcs11Uri *uri,
                           const TokenOptions &options, bool &interactive) {
    return obtain_pin(uri, options, label, interactive);
}

void login(Pkcs11Context &context, PKCS11_SLOT *slot, const Pkcs11Uri *uri,
           const TokenOptions &options) {
    const PKCS11_TOKEN *token = slot->token;
    std::string label = token_label(token);

    int logged_in = 0;
    if (!token->loginRequired || (PKCS11_is_logged_in(slot, 0, &logged_in) == 0 && logged_in))
        return;
    // Another context of this process, such as one for a second key, may have logged in.
    // libp11 checks only its own sessions, so a session of our own reads the shared state.
    if (DirectSession(context, slot).user_logged_in())
        return;

    PinState state{token->userPinLocked != 0, token->userPinFinalTry != 0,
                   token->userPinCountLow != 0};
    check_pin_state(label, state, uri, options);

    if (token->secureLogin) {
        if (options.warn)
            options.warn("enter the PIN for token '" + label + "' on the reader's PIN pad");
        if (PKCS11_login(slot, 0, nullptr) != 0)
            throw Pkcs11Error(take_ckr_code(), "C_Login", label);
        return;
    }

    bool interactive = false;
    SecurePin pin = obtain_pin(uri, options, label, interactive);
    clear_openssl_errors();
    if (PKCS11_login(slot, 0, pin.c_str()) != 0) {
        unsigned long rv = take_ckr_code();
        throw Pkcs11Error(rv, "C_Login", label,
                          rv == CKR_PIN_INCORRECT
                              ? "check the PIN; p11smime did not retry it, so the token "
                                "counted one failed try"
                              : std::string());
    }
    context.keep_pin(std::move(pin));
}

std::string choose_module(const Pkcs11Uri *uri, const TokenOptions &options) {
    if (uri && uri->module_path)
        return *uri->module_path;
    if (options.module)
        return *options.module;
    if (const char *variable = std::getenv("P11SMIME_MODULE"); variable && *variable)
        return variable;
    return P11SMIME_PROXY_MODULE;
}

std::string proxy_module_path() { return P11SMIME_PROXY_MODULE; }

namespace {

struct FoundKey {
    PKCS11_SLOT *slot = nullptr;
    PKCS11_KEY *key = nullptr;
};

std::string describe_key(const PKCS11_KEY &key) {
    return "'" + std::string(key.label ? key.label : "") + "' (id " + hex_id(key.id, key.id_len) +
           ")";
}

// Returns the one private key on the slot's token that matches uri, or null. A URI that
// matches several keys is an error: signing with an arbitrary one of them would surprise.
PKCS11_KEY *find_private_key(PKCS11_SLOT *slot, const Pkcs11Uri &uri) {
    PKCS11_KEY *keys = nullptr;
    unsigned int count = 0;
    if (PKCS11_enumerate_keys(slot->token, &keys, &count) != 0)
        throw Pkcs11Error(take_ckr_code(), "C_FindObjects (private keys)",
                          token_label(slot->token));
    std::vector<PKCS11_KEY *> found;
    for (unsigned int i = 0; i < count; ++i)
        if (key_matches(uri, keys[i]))
            found.push_back(&keys[i]);
    if (found.size() <= 1)
        return found.empty() ? nullptr : found.front();

    std::string names;
    for (const PKCS11_KEY *key : found)
        names += (names.empty() ? "" : ", ") + describe_key(*key);
    throw Error("key URI '" + uri.to_string() + "' matches " +
                    std::to_string(found.size()) + " private keys: " + names,
                "add object= or id= to the URI to name one key");
}

// With several tokens matching the URI, picks the one that shows a matching key without a
// login, or else the only one that needs a login. Sending the PIN to several tokens could
// cost tries on the wrong ones, so more than one is an error.
PKCS11_SLOT *choose_slot(const std::vector<PKCS11_SLOT *> &slots, const Pkcs11Uri &uri) {
    std::vector<PKCS11_SLOT *> need_login;
    for (PKCS11_SLOT *slot : slots) {
        if (find_private_key(slot, uri))
            return slot;
        if (slot->token->loginRequired)
            need_login.push_back(slot);
    }
    if (need_login.size() > 1)
        throw Error("key URI '" + uri.to_string() + "' matches " +
                        std::to_string(need_login.size()) + " tokens that need a login",
                    "add token= or serial= to the URI so only one token gets the PIN");
    if (need_login.empty())
        throw Error("no private key matching '" + uri.to_string() + "'",
                    "run 'p11smime list --login' to see the keys and their URIs");
    return need_login.front();
}

// Finds the key and logs in to its token first when the token requires a login, because the
// key is opened for a private-key operation. Keys that a token shows without a login, as
// OpenSC shows those of PIV cards, still need the login before they sign or decrypt.
FoundKey find_key(Pkcs11Context &context, const Pkcs11Uri &uri, const TokenOptions &options) {
    std::vector<PKCS11_SLOT *> slots = matching_slots(context, uri);
    if (slots.empty())
        throw TokenNotFoundError("no token matching '" + uri.to_string() + "' in module '" +
                        context.path() + "'",
                    "insert the token, or run 'p11smime list' to see the tokens present");

    PKCS11_SLOT *slot = slots.size() == 1 ? slots.front() : choose_slot(slots, uri);
    login(context, slot, &uri, options);
    if (PKCS11_KEY *key = find_private_key(slot, uri))
        return {slot, key};
    throw Error("no private key matching '" + uri.to_string() + "'",
                "run 'p11smime list --login' to see the keys and their URIs");
}

// Finds the certificate named by certificate_uri, or else the one with the key's CKA_ID, by
// a search template instead of reading every certificate on the token.
X509Ptr find_certificate(DirectSession &session, PKCS11_SLOT *slot, PKCS11_KEY *key,
                         const std::optional<Pkcs11Uri> &certificate_uri) {
    std::vector<unsigned char> key_id(key->id, key->id + key->id_len);
    X509Ptr certificate = certificate_uri
                              ? session.find_certificate(certificate_uri->object,
                                                         certificate_uri->id)
                              : session.find_certificate(std::nullopt, key_id);
    if (certificate)
        return certificate;

    if (certificate_uri)
        throw Error("no certificate matching '" + certificate_uri->to_string() + "'",
                    "run 'p11smime list' to see the certificates and their URIs");
    throw Error("token '" + token_label(slot->token) +
                    "' has no certificate with the key's CKA_ID " + hex_id(key->id, key->id_len),
                "store the certificate on the token with the same CKA_ID, or pass --cert FILE");
}

// Deepest chain of token certificates collected above a signer certificate.
constexpr int max_chain_depth = 8;

// Collects the token certificates that issued certificate, walking up towards the root: each
// issuer is found by its subject, the issuer name of the certificate below it.
X509StackPtr token_chain(DirectSession &session, X509 *certificate) {
    X509StackPtr chain(sk_X509_new_null());
    X509 *current = certificate;
    for (int depth = 0; chain && depth < max_chain_depth; ++depth) {
        if (X509_check_issued(current, current) == X509_V_OK)
            break; // a self-signed root ends the chain
        X509Ptr issuer;
        for (X509Ptr &candidate : session.find_certificates_by_subject(
                 X509_get_issuer_name(current)))
            if (!issuer && X509_cmp(candidate.get(), current) != 0 &&
                X509_check_issued(candidate.get(), current) == X509_V_OK)
                issuer = std::move(candidate);
        if (!issuer)
            break;
        current = issuer.get();
        sk_X509_push(chain.get(), issuer.release());
    }
    return chain;
}

// Returns the certificates on the slot's token, enumerated without a login.
std::vector<PKCS11_CERT *> token_certificates(PKCS11_SLOT *slot) {
    PKCS11_CERT *certs = nullptr;
    unsigned int count = 0;
    if (PKCS11_enumerate_certs(slot->token, &certs, &count) != 0)
        throw Pkcs11Error(take_ckr_code(), "C_FindObjects (certificates)",
                          token_label(slot->token));
    std::vector<PKCS11_CERT *> result;
    for (unsigned int i = 0; i < count; ++i)
        if (certs[i].x509)
            result.push_back(&certs[i]);
    return result;
}

// Returns the URI of the private key with the certificate's CKA_ID on the slot's token.
Pkcs11Uri key_uri_for(PKCS11_SLOT *slot, const PKCS11_CERT *cert) {
    Pkcs11Uri uri;
    uri.token = slot->token->label;
    uri.serial = slot->token->serialnr;
    uri.slot_id = PKCS11_get_slotid_from_slot(slot);
    uri.id.emplace(cert->id, cert->id + cert->id_len);
    uri.type = "private";
    return uri;
}

} // namespace

std::vector<PKCS11_SLOT *> matching_slots(Pkcs11Context &context, const Pkcs11Uri &uri) {
    std::vector<PKCS11_SLOT *> result;
    for (unsigned int i = 0; i < context.slot_count(); ++i)
        if (token_matches(uri, &context.slots()[i]))
            result.push_back(&context.slots()[i]);
    return result;
}

TokenKey::TokenKey(std::shared_ptr<Pkcs11Context> context, PKCS11_SLOT *slot, EvpPkeyPtr key,
                   X509Ptr certificate, X509StackPtr chain)
    : context_(std::move(context)), slot_(slot), key_(std::move(key)),
      certificate_(std::move(certificate)), chain_(std::move(chain)) {}

TokenKey::~TokenKey() = default;
TokenKey::TokenKey(TokenKey &&) noexcept = default;
TokenKey &TokenKey::operator=(TokenKey &&) noexcept = default;

std::shared_ptr<Pkcs11Context> load_module(const std::string &path) {
    return std::make_shared<Pkcs11Context>(path);
}

unsigned long TokenKey::probe() const {
    clear_openssl_errors();
    unsigned char byte = 0;
    if (PKCS11_generate_random(slot_, &byte, 1) == 0)
        return CKR_OK;
    unsigned long rv = take_ckr_code();
    if (rv == CKR_RANDOM_NO_RNG || rv == CKR_FUNCTION_NOT_SUPPORTED)
        return CKR_OK;
    return rv;
}

bool TokenKey::offers_raw_rsa_decryption() const {
    CK_MECHANISM_INFO info{};
    CK_RV rv = context_->functions()->C_GetMechanismInfo(PKCS11_get_slotid_from_slot(slot_),
                                                         CKM_RSA_X_509, &info);
    return rv == CKR_OK && (info.flags & CKF_DECRYPT);
}

TokenKey open_token_key(const Pkcs11Uri &key_uri, const std::optional<Pkcs11Uri> &certificate_uri,
                        const TokenOptions &options, bool certificate_on_token) {
    return open_token_key(load_module(choose_module(&key_uri, options)), key_uri,
                          certificate_uri, options, certificate_on_token);
}

TokenKey open_token_key(const std::shared_ptr<Pkcs11Context> &module, const Pkcs11Uri &key_uri,
                        const std::optional<Pkcs11Uri> &certificate_uri,
                        const TokenOptions &options, bool certificate_on_token) {
    if (key_uri.type && *key_uri.type != "private")
        throw Error("key URI '" + key_uri.to_string() + "' names type=" + *key_uri.type,
                    "use the URI of a private key (type=private)");

    FoundKey found = find_key(*module, key_uri, options);

    X509Ptr certificate;
    X509StackPtr chain(sk_X509_new_null());
    if (certificate_on_token) {
        DirectSession session(*module, found.slot);
        certificate = find_certificate(session, found.slot, found.key, certificate_uri);
        chain = token_chain(session, certificate.get());
    }
    clear_openssl_errors();
    EvpPkeyPtr key(PKCS11_get_private_key(found.key));
    if (!key)
        throw Pkcs11Error(take_ckr_code(), "reading the private key",
                          token_label(found.slot->token));
    return TokenKey(module, found.slot, std::move(key), std::move(certificate),
                    std::move(chain));
}

X509Ptr read_token_certificate(const Pkcs11Uri &uri, const TokenOptions &options) {
    Pkcs11Context context(choose_module(&uri, options));
    for (PKCS11_SLOT *slot : matching_slots(context, uri)) {
        DirectSession session(context, slot);
        if (X509Ptr certificate = session.find_certificate(uri.object, uri.id))
            return certificate;
    }
    throw Error("no certificate matching '" + uri.to_string() + "'",
                "run 'p11smime list' to see the certificates and their URIs");
}

std::optional<TokenKey> open_recipient_key(const std::function<bool(X509 *)> &is_recipient,
                                           const TokenOptions &options) {
    return open_key_by_certificate(is_recipient, options);
}

std::optional<TokenKey> open_key_by_certificate(const std::function<bool(X509 *)> &wanted,
                                                const TokenOptions &options) {
    return open_recipient_key(load_module(choose_module(nullptr, options)), wanted, options);
}

std::optional<TokenKey> open_recipient_key(const std::shared_ptr<Pkcs11Context> &module,
                                           const std::function<bool(X509 *)> &is_recipient,
                                           const TokenOptions &options) {
    std::optional<Pkcs11Uri> found;
    Pkcs11Uri any_token;
    for (PKCS11_SLOT *slot : matching_slots(*module, any_token)) {
        for (PKCS11_CERT *cert : token_certificates(slot)) {
            if (is_recipient(cert->x509)) {
                found = key_uri_for(slot, cert);
                break;
            }
        }
        if (found)
            break;
    }
    if (!found)
        return std::nullopt;
    return open_token_key(module, *found, std::nullopt, options);
}

} // namespace p11smime
