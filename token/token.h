// The PKCS#11 layer: module loading, token and object lookup, login, and the EVP_PKEY whose
// private operations run on the token. This is the only part of p11smime that uses libp11.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/ossl.h"
#include "token/pin.h"
#include "token/uri.h"

struct PKCS11_slot_st; // libp11's PKCS11_SLOT

namespace p11smime {

// Error raised by a PKCS#11 call. The message names the CKR_ value, the operation and the
// token label; the command maps it to exit status 2.
class Pkcs11Error : public Error {
  public:
    Pkcs11Error(unsigned long rv, const std::string &operation, const std::string &token_label,
                std::string hint = {});

    unsigned long rv() const noexcept { return rv_; }

  private:
    unsigned long rv_;
};

// Returns the CKR_ name of a PKCS#11 return value, or its hexadecimal value if unknown.
std::string ckr_name(unsigned long rv);

// Module and PIN settings for the token layer.
struct TokenOptions {
    // --module: used when the URI has no module-path.
    std::optional<std::string> module;

    // --pin-file: a file whose first line is the PIN.
    std::optional<std::string> pin_file;

    // Asks the person for the PIN of the named token, e.g. on /dev/tty. Empty when no
    // terminal is attached, so the login is non-interactive.
    std::function<SecurePin(const std::string &token_label)> prompt_pin;

    // Receives warnings for the person, such as a PIN given in the URI. The library never prints.
    std::function<void(const std::string &message)> warn;
};

// Returns the module path to load: the URI's module-path, then options.module, then the
// P11SMIME_MODULE environment variable, then p11-kit's proxy module.
std::string choose_module(const Pkcs11Uri *uri, const TokenOptions &options);

// Returns the path of p11-kit's proxy module, the default of choose_module.
std::string proxy_module_path();

// A certificate on a token, as shown by `p11smime list`.
struct CertificateInfo {
    std::string uri;
    std::string key_uri; // the private key with the same CKA_ID
    std::string label;
    std::string id_hex;
    std::string subject;
    std::string issuer;
    std::vector<std::string> emails;
    std::string not_before;
    std::string not_after;
    std::vector<std::string> key_usage;
    std::vector<unsigned char> der; // the certificate itself

    // Key objects with the certificate's CKA_ID, and whether one of them has its public key.
    bool has_private_key = false;
    bool has_public_key = false;
    bool key_matches = false;
};

// A key object on a token, as shown by `p11smime list`.
struct KeyInfo {
    std::string uri;
    std::string label;
    std::string id_hex;
    bool is_private = false;
    std::string algorithm; // "RSA" or "EC"
    int bits = 0;
    std::string curve; // for EC keys
};

// A slot and its token, as shown by `p11smime list`.
struct SlotInfo {
    unsigned long slot_id = 0;
    std::string description;
    std::string manufacturer;
    bool token_present = false;
    std::string token_uri;
    std::string label;
    std::string token_manufacturer;
    std::string model;
    std::string serial;
    std::vector<std::string> flags; // e.g. "login-required", "user-pin-count-low"
    bool logged_in = false;
    bool objects_listed = false; // inspect_tokens looked at this token's objects
    std::string login_error;     // why inspect_tokens could not log in, or empty
    std::vector<CertificateInfo> certificates;
    std::vector<KeyInfo> keys;
};

struct ModuleInfo {
    std::string path;
    std::string manufacturer;
    std::string description;
    std::vector<SlotInfo> slots;
};

// Lists the slots, tokens and objects of one module. With login set, it logs in to each token
// that requires it so that private keys become visible. Throws Error or Pkcs11Error.
ModuleInfo list_module(const std::string &module_path, const TokenOptions &options, bool login);

// Lists the slots and tokens of one module, without their objects and without a login.
// Throws Error when the module cannot be loaded.
ModuleInfo list_module_slots(const std::string &module_path);

// Lists the module's slots, and the objects of each initialised token that matches filter
// (every token when filter is null). With login set it logs in to those tokens first; a
// failed login is kept in SlotInfo::login_error and the objects are then listed without it.
// Throws Error when the module cannot be loaded.
ModuleInfo inspect_tokens(const std::string &module_path, const TokenOptions &options,
                          const Pkcs11Uri *filter, bool login);

// A module registered with p11-kit, as p11-kit loads it for this program.
struct RegisteredModule {
    std::string name; // the name of its p11-kit configuration file
    std::string path;
    bool used_by_proxy = true; // false when its configuration disables it in p11-kit-proxy
    unsigned long initialize_rv = 0; // C_Initialize's return value, CKR_OK (0) when it loaded
    std::string description;        // CK_INFO libraryDescription
};

struct RegisteredModules {
    std::vector<RegisteredModule> modules;
    std::string message; // p11-kit's last message, such as a module that failed to load
};

// Loads and initialises each module registered with p11-kit, then releases them again.
RegisteredModules registered_modules();

// Error raised when no token matches a URI, as when the token is not inserted. A process that
// recovers from a lost token waits and tries again on this error.
class TokenNotFoundError : public Error {
  public:
    using Error::Error;
};

class Pkcs11Context;

// A private key on a token with its certificate. key() performs its private operations on the
// token; the module stays loaded and logged in while this object lives.
class TokenKey {
  public:
    TokenKey(std::shared_ptr<Pkcs11Context> context, PKCS11_slot_st *slot, EvpPkeyPtr key,
             X509Ptr certificate, X509StackPtr chain);
    ~TokenKey();
    TokenKey(TokenKey &&) noexcept;
    TokenKey &operator=(TokenKey &&) noexcept;

    EVP_PKEY *key() const { return key_.get(); }
    X509 *certificate() const { return certificate_.get(); }

    // The token's other certificates that certify certificate(), nearest issuer first.
    STACK_OF(X509) * chain() const { return chain_.get(); }

    // Checks that the token still responds by requesting one random byte (C_GenerateRandom) in
    // a session from libp11's pool. Returns CKR_OK when it responds, also when it has no random
    // number generator, and otherwise the CKR_ value of the failure.
    unsigned long probe() const;

    // Returns whether the token offers raw RSA decryption (CKM_RSA_X_509), which libp11
    // 0.4.12 uses to decrypt RSAES-OAEP, checking the padding in software.
    bool offers_raw_rsa_decryption() const;

  private:
    // Declared first, so it is destroyed last: the key needs the loaded module.
    std::shared_ptr<Pkcs11Context> context_;
    PKCS11_slot_st *slot_; // owned by context_
    EvpPkeyPtr key_;
    X509Ptr certificate_;
    X509StackPtr chain_;
};

// Loads and initialises the PKCS#11 module at path. Keys opened from the returned module
// share it, so a batch loads the module once and logs in to each token once; the module stays
// loaded while the returned pointer or any key from it lives. Throws Error naming the path
// when the module cannot be loaded.
std::shared_ptr<Pkcs11Context> load_module(const std::string &path);

// Opens the token named by key_uri, logs in, and returns its private key. The certificate is
// the one named by certificate_uri, or else the token certificate with the key's CKA_ID; with
// certificate_on_token false the caller supplies it and certificate() is null. Throws
// TokenNotFoundError when no token matches, Error when the key or certificate is not found,
// and Pkcs11Error when a PKCS#11 call fails. A rejected PIN is never retried.
TokenKey open_token_key(const Pkcs11Uri &key_uri, const std::optional<Pkcs11Uri> &certificate_uri,
                        const TokenOptions &options, bool certificate_on_token = true);

// Like open_token_key() above, but in a module already loaded with load_module(). The token
// is not logged in again when an earlier key logged in to it.
TokenKey open_token_key(const std::shared_ptr<Pkcs11Context> &module, const Pkcs11Uri &key_uri,
                        const std::optional<Pkcs11Uri> &certificate_uri,
                        const TokenOptions &options, bool certificate_on_token = true);

// Returns the certificate named by uri (type=cert, or a key's URI whose certificate shares its
// label or CKA_ID), read without logging in. Throws Error when none matches.
X509Ptr read_token_certificate(const Pkcs11Uri &uri, const TokenOptions &options);

// Finds the first token certificate for which wanted returns true, and opens the private key
// with the same CKA_ID, logging in to that token only. Searches every initialised token of
// the chosen module; returns nothing when no certificate matches.
std::optional<TokenKey> open_key_by_certificate(const std::function<bool(X509 *)> &wanted,
                                                const TokenOptions &options);

// Opens the private key of the first token certificate that is_recipient accepts.
std::optional<TokenKey> open_recipient_key(const std::function<bool(X509 *)> &is_recipient,
                                           const TokenOptions &options);

// Like open_recipient_key() above, but in a module already loaded with load_module().
std::optional<TokenKey> open_recipient_key(const std::shared_ptr<Pkcs11Context> &module,
                                           const std::function<bool(X509 *)> &is_recipient,
                                           const TokenOptions &options);

} // namespace p11smime
