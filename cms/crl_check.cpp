#include "cms/crl_check.h"

#include <memory>

#include <openssl/x509v3.h>

#include "cms/validation_time.h"
#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {
namespace {

// Clock skew allowed between this machine and the CRL issuer, in seconds.
constexpr std::time_t clock_leeway = 300;

using IssuingDistPointPtr =
    std::unique_ptr<ISSUING_DIST_POINT, CDeleter<ISSUING_DIST_POINT_free>>;
using DistPointsPtr = std::unique_ptr<CRL_DIST_POINTS, CDeleter<CRL_DIST_POINTS_free>>;

bool contains_name(GENERAL_NAMES *names, GENERAL_NAME *name) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i)
        if (GENERAL_NAME_cmp(sk_GENERAL_NAME_value(names, i), name) == 0)
            return true;
    return false;
}

// Tells whether one of the full names of the CRL's issuingDistributionPoint is also a
// distribution point of the certificate (RFC 5280 section 6.3.3 (b)(2)(i)).
bool distribution_point_matches(const DIST_POINT_NAME *scope, X509 *certificate) {
    if (!scope || scope->type != 0)
        return true;
    DistPointsPtr points(static_cast<CRL_DIST_POINTS *>(
        X509_get_ext_d2i(certificate, NID_crl_distribution_points, nullptr, nullptr)));
    for (int i = 0; points && i < sk_DIST_POINT_num(points.get()); ++i) {
        DIST_POINT *point = sk_DIST_POINT_value(points.get(), i);
        if (!point->distpoint || point->distpoint->type != 0)
            continue;
        GENERAL_NAMES *names = point->distpoint->name.fullname;
        for (int j = 0; j < sk_GENERAL_NAME_num(scope->name.fullname); ++j)
            if (contains_name(names, sk_GENERAL_NAME_value(scope->name.fullname, j)))
                return true;
    }
    return false;
}

std::string issuing_distribution_point_problem(X509_CRL *crl, X509 *certificate) {
    IssuingDistPointPtr scope(static_cast<ISSUING_DIST_POINT *>(
        X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, nullptr, nullptr)));
    if (!scope)
        return {};
    if (scope->indirectCRL || scope->onlyattr || scope->onlysomereasons)
        return "the CRL is indirect, for attribute certificates or for some reasons only, "
               "which is not supported";

    bool is_ca = X509_check_ca(certificate) > 0;
    if ((scope->onlyuser && is_ca) || (scope->onlyCA && !is_ca))
        return "the CRL covers only " +
               std::string(scope->onlyCA ? "CA" : "end-entity") + " certificates";
    if (!distribution_point_matches(scope->distpoint, certificate))
        return "the CRL's issuingDistributionPoint is not a CRL distribution point of the "
               "certificate";
    return {};
}

// Returns why crl cannot answer for certificate, or an empty string when it can.
std::string scope_problem(X509_CRL *crl, X509 *certificate) {
    for (int i = 0; i < X509_CRL_get_ext_count(crl); ++i) {
        X509_EXTENSION *extension = X509_CRL_get_ext(crl, i);
        int nid = OBJ_obj2nid(X509_EXTENSION_get_object(extension));
        if (nid == NID_delta_crl)
            return "delta CRLs are not supported";
        if (X509_EXTENSION_get_critical(extension) && nid != NID_issuing_distribution_point)
            return "the CRL has an unsupported critical extension";
    }
    return issuing_distribution_point_problem(crl, certificate);
}

SourceAnswer revoked_answer(X509_REVOKED *entry) {
    SourceAnswer answer;
    answer.kind = SourceAnswer::Kind::revoked;
    answer.revocation_time = to_time_t(X509_REVOKED_get0_revocationDate(entry));
    auto *reason = static_cast<ASN1_ENUMERATED *>(
        X509_REVOKED_get_ext_d2i(entry, NID_crl_reason, nullptr, nullptr));
    if (reason) {
        answer.reason = static_cast<int>(ASN1_ENUMERATED_get(reason));
        ASN1_ENUMERATED_free(reason);
    }
    return answer;
}

// A CRL that does not list a certificate speaks for the time at when it was issued after at,
// or when at lies before its nextUpdate.
std::string freshness_problem(X509_CRL *crl, std::time_t at) {
    std::optional<std::time_t> this_update = to_time_t(X509_CRL_get0_lastUpdate(crl));
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    std::optional<std::time_t> next_update = to_time_t(next);
    if (!this_update)
        return "the CRL has an invalid thisUpdate";
    if (*this_update + clock_leeway >= at)
        return {};
    if (!next)
        return "the CRL has no nextUpdate and was issued on " + iso8601(*this_update) +
               ", before the validation time " + iso8601(at);
    if (!next_update || *next_update + clock_leeway < at)
        return "the CRL expired: its nextUpdate " +
               (next_update ? iso8601(*next_update) : std::string("is invalid")) +
               " is before the validation time " + iso8601(at);
    return {};
}

} // namespace

SourceAnswer check_against_crl(X509_CRL *crl, X509 *certificate, X509 *issuer, std::time_t at) {
    SourceAnswer answer;
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(certificate)) != 0)
        return answer;
    if (X509_CRL_verify(crl, X509_get0_pubkey(issuer)) != 1) {
        clear_openssl_errors();
        answer.problem = "the CRL's signature does not verify with the issuer's key";
        return answer;
    }
    answer.problem = scope_problem(crl, certificate);
    if (!answer.problem.empty())
        return answer;

    X509_REVOKED *entry = nullptr;
    if (X509_CRL_get0_by_cert(crl, &entry, certificate) == 1)
        return revoked_answer(entry);
    answer.problem = freshness_problem(crl, at);
    if (answer.problem.empty())
        answer.kind = SourceAnswer::Kind::good;
    return answer;
}

std::string crl_reason_name(int reason) {
    static const char *const names[] = {
        "unspecified",          "keyCompromise",        "cACompromise",
        "affiliationChanged",   "superseded",           "cessationOfOperation",
        "certificateHold",      "unused (7)",           "removeFromCRL",
        "privilegeWithdrawn",   "aACompromise"};
    if (reason < 0)
        return "no reason given";
    if (reason >= static_cast<int>(std::size(names)))
        return "reason " + std::to_string(reason);
    return names[reason];
}

bool revoked_at_any_time(int reason) {
    return reason == CRL_REASON_KEY_COMPROMISE || reason == CRL_REASON_CA_COMPROMISE ||
           reason == CRL_REASON_AA_COMPROMISE;
}

} // namespace p11smime
