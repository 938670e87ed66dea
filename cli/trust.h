// Trust settings of `verify` and `decrypt`: validation time, revocation and the certificate
// folder that `verify --learn` fills and `certs` manages.
#pragma once

#include "cli/commands.h"
#include "cms/verify.h"
#include "common/ossl.h"

namespace p11smime::cli {

// Copies the time, Date header and revocation options into verify. Throws Error for an
// invalid --at-time value.
void add_trust_settings(const VerifyCommandOptions &options, VerifyOptions &verify);

// Stores, in folder, the certificate of each signer of a verified result whose email address
// is the From address, and prints what was done on stderr. Throws Error when the folder
// cannot be written.
void learn_signers(const std::string &folder, const VerifyResult &result);

// Returns the content cipher for recipients: --cipher when given, else the choice that
// choose_cipher makes from the SMIMECapabilities learned in --cert-dir.
std::string content_cipher(const std::vector<X509Ptr> &recipients,
                           const EncryptionSettings &settings);

// Returns $XDG_CACHE_HOME/p11smime/revocation, else ~/.cache/p11smime/revocation, or nothing
// when neither variable is set.
std::optional<std::string> default_revocation_cache();

} // namespace p11smime::cli
