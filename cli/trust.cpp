#include "cli/trust.h"

#include <cstdlib>

namespace p11smime::cli {

std::optional<std::string> default_revocation_cache() {
    const char *cache = std::getenv("XDG_CACHE_HOME");
    if (cache && *cache == '/')
        return std::string(cache) + "/p11smime/revocation";
    const char *home = std::getenv("HOME");
    if (home && *home)
        return std::string(home) + "/.cache/p11smime/revocation";
    return std::nullopt;
}

void add_trust_settings(const VerifyCommandOptions &options, VerifyOptions &verify) {
    verify.at_time = parse_at_time(options.at_time);
    verify.date_mismatch_fails = options.date_mismatch == "fail";

    RevocationOptions &revocation = verify.revocation;
    revocation.crl_files = options.crl_files;
    revocation.crl_dir = options.crl_dir;
    revocation.online = options.online;
    revocation.ocsp_url = options.ocsp_url;
    revocation.mode = options.revocation == "hard" ? RevocationMode::hard : RevocationMode::soft;
    revocation.timeout_seconds = options.timeout_seconds;
    revocation.cache_dir = options.cache_dir ? options.cache_dir : default_revocation_cache();
}

} // namespace p11smime::cli
