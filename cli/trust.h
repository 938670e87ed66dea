// Trust settings of `verify` and `decrypt`: validation time, revocation and the certificate
// folder that `verify --learn` fills and `certs` manages.
#pragma once

#include "cli/commands.h"
#include "cms/verify.h"

namespace p11smime::cli {

// Copies the time, Date header and revocation options into verify. Throws Error for an
// invalid --at-time value.
void add_trust_settings(const VerifyCommandOptions &options, VerifyOptions &verify);

// Returns $XDG_CACHE_HOME/p11smime/revocation, else ~/.cache/p11smime/revocation, or nothing
// when neither variable is set.
std::optional<std::string> default_revocation_cache();

} // namespace p11smime::cli
