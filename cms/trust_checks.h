// Internal to cms/: the checks of verify_message that concern time, revocation and what a
// signer announces, kept apart from the signature and path checks.
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include <openssl/cms.h>

#include "cms/mime.h"
#include "cms/verify.h"

namespace p11smime {

// Returns the time to validate signer's path at, and records it and its source in report.
// Records a time_failure instead when options ask for signingTime and it is absent or in the
// future; the current time is returned then.
std::time_t choose_validation_time(const AtTime &at_time, std::optional<std::time_t> signing,
                                   SignerReport &report);

// Adds notes about signing to report: a signingTime in the future or outside the validity
// of certificate, and a Date header that cannot be read or is more than
// date_tolerance_seconds from signingTime.
void add_time_notes(X509 *certificate, std::optional<std::time_t> signing,
                    const std::string &date, SignerReport &report);

// Returns the value of the first header called name, unfolded, or an empty string.
std::string header_value(const MessageHeaders &split, const std::string &name);

// Returns the SMIMECapabilities of signer as dotted OIDs, in the signer's order.
std::vector<std::string> smime_capabilities(CMS_SignerInfo *signer);

// Returns the DER encoding of certificate.
std::string certificate_der(X509 *certificate);

// Adds the failures and warnings that time notes and the revocation report of signer give,
// with who naming the signer in the text.
void collect_trust_findings(const VerifyOptions &options, const SignerReport &signer,
                            const std::string &who, VerifyResult &result);

} // namespace p11smime
