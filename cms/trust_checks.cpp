#include "cms/trust_checks.h"

#include <strings.h>

#include <cstdlib>

#include <openssl/x509.h>

namespace p11smime {
namespace {

// Clock skew tolerated before a signingTime counts as being in the future, in seconds.
constexpr std::time_t signing_time_leeway = 300;

std::string duration_text(long seconds) {
    long minutes = (seconds + 59) / 60;
    if (minutes < 120)
        return std::to_string(minutes) + " minutes";
    long hours = (minutes + 30) / 60;
    if (hours < 48)
        return "about " + std::to_string(hours) + " hours";
    return "about " + std::to_string((hours + 12) / 24) + " days";
}

void add_validity_notes(X509 *certificate, std::time_t signing, SignerReport &report) {
    std::optional<std::time_t> not_before = to_time_t(X509_get0_notBefore(certificate));
    std::optional<std::time_t> not_after = to_time_t(X509_get0_notAfter(certificate));
    if (not_after && signing > *not_after)
        report.notes.push_back("signingTime " + iso8601(signing) +
                               " is after the certificate expired on " + iso8601(*not_after));
    if (not_before && signing < *not_before)
        report.notes.push_back("signingTime " + iso8601(signing) +
                               " is before the certificate's validity starts on " +
                               iso8601(*not_before));
}

void add_date_note(const std::string &date, std::time_t signing, SignerReport &report) {
    if (date.empty())
        return;
    std::optional<std::time_t> date_time = parse_date_header(date);
    if (!date_time) {
        report.date_note = "the Date header '" + date + "' cannot be read, so it cannot be "
                           "compared with signingTime " + iso8601(signing);
        return;
    }
    long skew = std::labs(static_cast<long>(*date_time - signing));
    if (skew <= date_tolerance_seconds)
        return;
    report.date_note = "the Date header (" + iso8601(*date_time) + ") is " +
                       duration_text(skew) + (*date_time > signing ? " after" : " before") +
                       " signingTime (" + iso8601(signing) + "), more than the " +
                       duration_text(date_tolerance_seconds) + " allowed";
}

std::string revocation_details(const CertificateRevocation &certificate) {
    std::string text;
    for (const auto &problem : certificate.problems)
        text += (text.empty() ? "" : "; ") + problem;
    return text.empty() ? "no source answered" : text;
}

void collect_revocation_findings(const VerifyOptions &options, const SignerReport &signer,
                                 const std::string &who, VerifyResult &result) {
    bool hard = options.revocation.mode == RevocationMode::hard;
    bool leaf = true;
    for (const auto &certificate : signer.revocation.certificates) {
        std::string name = leaf ? "certificate of " + who
                                : "CA certificate '" + certificate.subject + "' in the path of " +
                                      who;
        leaf = false;
        if (certificate.status == RevocationStatus::revoked)
            result.failures.push_back(name + " was revoked on " +
                                      (certificate.revocation_time.empty()
                                           ? std::string("an unknown date")
                                           : certificate.revocation_time) +
                                      " (" + certificate.reason + "), says " +
                                      certificate.source);
        else if (certificate.status == RevocationStatus::unknown)
            (hard ? result.failures : result.warnings)
                .push_back("revocation status of " + name +
                           " is unknown: " + revocation_details(certificate));
        else if (certificate.status == RevocationStatus::not_checked && hard)
            result.failures.push_back("revocation of " + name +
                                      " was not checked: give --crl-file, --crl-dir or "
                                      "--online with --revocation hard");
        if (!certificate.note.empty())
            result.warnings.push_back(name + " was " + certificate.note);
    }
}

} // namespace

std::time_t choose_validation_time(const AtTime &at_time, std::optional<std::time_t> signing,
                                   SignerReport &report) {
    std::time_t now = std::time(nullptr);
    report.validation_time_source = "now";
    report.validation_time = iso8601(now);
    if (at_time.kind == AtTime::Kind::given) {
        report.validation_time_source = "--at-time";
        report.validation_time = iso8601(at_time.given);
        return at_time.given;
    }
    if (at_time.kind != AtTime::Kind::signing)
        return now;
    if (!signing) {
        report.time_failure = "the signature has no signingTime attribute to validate the path "
                              "at; use --at-time now or a date";
        return now;
    }
    if (*signing > now + signing_time_leeway) {
        report.time_failure = "signingTime " + iso8601(*signing) +
                              " is in the future, so the path is not validated at it";
        return now;
    }
    report.validation_time_source = "signingTime";
    report.validation_time = iso8601(*signing);
    return *signing;
}

void add_time_notes(X509 *certificate, std::optional<std::time_t> signing,
                    const std::string &date, SignerReport &report) {
    if (!signing)
        return;
    if (*signing > std::time(nullptr) + signing_time_leeway)
        report.notes.push_back("signingTime " + iso8601(*signing) +
                               " is in the future");
    if (certificate)
        add_validity_notes(certificate, *signing, report);
    add_date_note(date, *signing, report);
}

std::string header_value(const MessageHeaders &split, const std::string &name) {
    for (const auto &header : split.routing_headers) {
        if (strcasecmp(header.name.c_str(), name.c_str()) != 0)
            continue;
        std::string value;
        size_t colon = header.raw.find(':');
        for (char c : header.raw.substr(colon == std::string::npos ? 0 : colon + 1))
            if (c != '\r' && c != '\n')
                value += c;
        size_t first = value.find_first_not_of(" \t");
        size_t last = value.find_last_not_of(" \t");
        return first == std::string::npos ? "" : value.substr(first, last - first + 1);
    }
    return {};
}

std::vector<std::string> smime_capabilities(CMS_SignerInfo *signer) {
    std::vector<std::string> oids;
    int index = CMS_signed_get_attr_by_NID(signer, NID_SMIMECapabilities, -1);
    X509_ATTRIBUTE *attribute = index >= 0 ? CMS_signed_get_attr(signer, index) : nullptr;
    ASN1_TYPE *value = attribute ? X509_ATTRIBUTE_get0_type(attribute, 0) : nullptr;
    if (!value || value->type != V_ASN1_SEQUENCE)
        return oids;
    const unsigned char *bytes = value->value.sequence->data;
    X509_ALGORS *algorithms =
        d2i_X509_ALGORS(nullptr, &bytes, value->value.sequence->length);
    for (int i = 0; i < sk_X509_ALGOR_num(algorithms); ++i) {
        const ASN1_OBJECT *object = nullptr;
        X509_ALGOR_get0(&object, nullptr, nullptr, sk_X509_ALGOR_value(algorithms, i));
        char text[80];
        OBJ_obj2txt(text, sizeof text, object, 1);
        oids.push_back(text);
    }
    sk_X509_ALGOR_pop_free(algorithms, X509_ALGOR_free);
    return oids;
}

std::string certificate_der(X509 *certificate) {
    unsigned char *der = nullptr;
    int length = i2d_X509(certificate, &der);
    std::string bytes = length > 0 ? std::string(reinterpret_cast<char *>(der), length) : "";
    OPENSSL_free(der);
    return bytes;
}

void collect_trust_findings(const VerifyOptions &options, const SignerReport &signer,
                            const std::string &who, VerifyResult &result) {
    if (!signer.time_failure.empty())
        result.failures.push_back(who + ": " + signer.time_failure);
    for (const auto &note : signer.notes)
        result.warnings.push_back(who + ": " + note);
    if (!signer.date_note.empty())
        (options.date_mismatch_fails ? result.failures : result.warnings)
            .push_back(who + ": " + signer.date_note);
    collect_revocation_findings(options, signer, who, result);
}

} // namespace p11smime
