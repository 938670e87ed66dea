// Internal to token/: helpers shared by key lookup and listing.
#pragma once

#include <string>

#include "token/context.h"
#include "token/token.h"

namespace p11smime {

// Formats a CKA_ID as lowercase hexadecimal.
std::string hex_id(const unsigned char *id, size_t length);

// Logs in to the slot's token as the user if it requires a login and is not logged in yet.
// Reads the PIN state flags first: a locked PIN is an error, and the final try is spent only
// when a person typed the PIN. Throws Error or Pkcs11Error; a rejected PIN is not retried.
void login(Pkcs11Context &context, PKCS11_SLOT *slot, const Pkcs11Uri *uri,
           const TokenOptions &options);

} // namespace p11smime
