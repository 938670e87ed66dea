// Internal to token/: helpers shared by key lookup, listing, key generation and import.
#pragma once

#include <string>
#include <vector>

#include "token/context.h"
#include "token/token.h"

namespace p11smime {

// Formats a CKA_ID as lowercase hexadecimal.
std::string hex_id(const unsigned char *id, size_t length);

// Returns the token's CKA_LABEL, or "" when libp11 has none.
std::string token_label(const PKCS11_TOKEN *token);

// Reads the CKR_ value libp11 queued for its last failure, then drains the queue. libp11
// queues it as the reason of an error whose library number, assigned at run time, is what
// ERR_get_CKR_code() returns.
unsigned long take_ckr_code();

// Returns the slots whose initialised token matches the token attributes of uri.
std::vector<PKCS11_SLOT *> matching_slots(Pkcs11Context &context, const Pkcs11Uri &uri);

// Logs in to the slot's token as the user if it requires a login and is not logged in yet.
// Reads the PIN state flags first: a locked PIN is an error, and the final try is spent only
// when a person typed the PIN. Throws Error or Pkcs11Error; a rejected PIN is not retried.
void login(Pkcs11Context &context, PKCS11_SLOT *slot, const Pkcs11Uri *uri,
           const TokenOptions &options);

// The user PIN flags of CK_TOKEN_INFO.
struct PinState {
    bool locked = false;    // CKF_USER_PIN_LOCKED
    bool final_try = false; // CKF_USER_PIN_FINAL_TRY
    bool count_low = false; // CKF_USER_PIN_COUNT_LOW
};

// Throws Error when the PIN is locked, or on its final try unless a person will type it.
// Warns through options.warn when few tries are left.
void check_pin_state(const std::string &label, const PinState &state, const Pkcs11Uri *uri,
                     const TokenOptions &options);

// Reads the PIN for the token from --pin-file, the URI's pin-source or pin-value, or the
// prompt, in that order. Sets interactive when a person typed it. Throws Error when none
// of them gives a PIN.
SecurePin obtain_login_pin(const std::string &label, const Pkcs11Uri *uri,
                           const TokenOptions &options, bool &interactive);

} // namespace p11smime
