#include "cms/revocation.h"

#include <dirent.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cms/crl_check.h"
#include "cms/online.h"
#include "cms/validation_time.h"
#include "common/x509_text.h"
#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {
namespace {

// Reads every CRL of a PEM file, or the one CRL of a DER file.
std::vector<X509CrlPtr> read_crl_file(const std::string &path) {
    BioPtr bio(BIO_new_file(path.c_str(), "rb"));
    if (!bio)
        throw OpensslError("cannot open CRL file '" + path + "'");
    std::vector<X509CrlPtr> crls;
    while (X509_CRL *crl = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr))
        crls.emplace_back(crl);
    clear_openssl_errors();
    if (crls.empty()) {
        BIO_reset(bio.get());
        if (X509_CRL *crl = d2i_X509_CRL_bio(bio.get(), nullptr))
            crls.emplace_back(crl);
    }
    if (crls.empty())
        throw OpensslError("no PEM or DER CRL in '" + path + "'",
                           "give a CRL file to --crl-file or --crl-dir");
    return crls;
}

// Tells whether a file name looks like a CRL: *.crl, *.pem, *.der, or the *.rN names that
// 'openssl rehash' gives CRLs.
bool is_crl_file_name(const std::string &name) {
    for (const char *extension : {".crl", ".pem", ".der"}) {
        size_t length = std::char_traits<char>::length(extension);
        if (name.size() > length && name.compare(name.size() - length, length, extension) == 0)
            return true;
    }
    size_t dot = name.rfind('.');
    return dot != std::string::npos && name.size() > dot + 2 && name[dot + 1] == 'r' &&
           name.find_first_not_of("0123456789", dot + 2) == std::string::npos;
}

std::vector<std::string> crl_files_in(const std::string &folder) {
    std::unique_ptr<DIR, int (*)(DIR *)> directory(opendir(folder.c_str()), closedir);
    if (!directory)
        throw Error("cannot open CRL folder '" + folder + "'",
                    "check the path given to --crl-dir");
    std::vector<std::string> files;
    while (dirent *entry = readdir(directory.get()))
        if (entry->d_name[0] != '.' && is_crl_file_name(entry->d_name))
            files.push_back(folder + "/" + entry->d_name);
    return files;
}

std::vector<std::string> ocsp_urls(X509 *certificate, const RevocationOptions &options) {
    if (options.ocsp_url)
        return {*options.ocsp_url};
    std::vector<std::string> urls;
    STACK_OF(OPENSSL_STRING) *list = X509_get1_ocsp(certificate);
    for (int i = 0; i < sk_OPENSSL_STRING_num(list); ++i)
        urls.push_back(sk_OPENSSL_STRING_value(list, i));
    X509_email_free(list);
    return urls;
}

std::vector<std::string> crl_distribution_points(X509 *certificate) {
    std::vector<std::string> urls;
    auto *points = static_cast<CRL_DIST_POINTS *>(
        X509_get_ext_d2i(certificate, NID_crl_distribution_points, nullptr, nullptr));
    for (int i = 0; i < sk_DIST_POINT_num(points); ++i) {
        DIST_POINT *point = sk_DIST_POINT_value(points, i);
        if (!point->distpoint || point->distpoint->type != 0)
            continue;
        GENERAL_NAMES *names = point->distpoint->name.fullname;
        for (int j = 0; j < sk_GENERAL_NAME_num(names); ++j) {
            GENERAL_NAME *name = sk_GENERAL_NAME_value(names, j);
            if (name->type == GEN_URI)
                urls.emplace_back(reinterpret_cast<const char *>(
                                      ASN1_STRING_get0_data(name->d.uniformResourceIdentifier)),
                                  ASN1_STRING_length(name->d.uniformResourceIdentifier));
        }
    }
    CRL_DIST_POINTS_free(points);
    return urls;
}

// Records a definite answer from source in result. A revocation after at, for a reason that
// does not reach back in time, leaves the certificate good at at and is noted.
void apply_answer(const SourceAnswer &answer, const std::string &source, std::time_t at,
                  CertificateRevocation &result) {
    result.source = source;
    if (answer.kind == SourceAnswer::Kind::good) {
        result.status = RevocationStatus::good;
        return;
    }
    result.reason = crl_reason_name(answer.reason);
    result.revocation_time = answer.revocation_time ? iso8601(*answer.revocation_time) : "";
    bool before = !answer.revocation_time || *answer.revocation_time <= at;
    if (before || revoked_at_any_time(answer.reason)) {
        result.status = RevocationStatus::revoked;
        return;
    }
    result.status = RevocationStatus::good;
    result.note = "revoked on " + result.revocation_time + " (" + result.reason +
                  "), after the validation time " + iso8601(at);
}

void add_problem(CertificateRevocation &result, const std::string &source,
                 const std::string &problem) {
    if (!problem.empty())
        result.problems.push_back(source + ": " + problem);
}

// Tries each CRL in turn: a revocation wins over a good answer from another CRL.
bool check_local_crls(const std::vector<std::pair<std::string, X509_CRL *>> &crls,
                      X509 *certificate, X509 *issuer, std::time_t at,
                      CertificateRevocation &result) {
    bool answered = false;
    for (const auto &[source, crl] : crls) {
        SourceAnswer answer = check_against_crl(crl, certificate, issuer, at);
        add_problem(result, source, answer.problem);
        if (answer.kind == SourceAnswer::Kind::none ||
            (answered && answer.kind == SourceAnswer::Kind::good))
            continue;
        apply_answer(answer, source, at, result);
        answered = true;
        if (result.status == RevocationStatus::revoked)
            break;
    }
    return answered;
}

bool check_ocsp(X509 *certificate, X509 *issuer, std::time_t at, X509_STORE *trust,
                STACK_OF(X509) * untrusted, const RevocationOptions &options,
                const RevocationCache &cache, CertificateRevocation &result) {
    for (const auto &url : ocsp_urls(certificate, options)) {
        std::string source = "OCSP " + url;
        OcspAnswer answer = query_ocsp(certificate, issuer, url, trust, untrusted, options, cache);
        add_problem(result, source, answer.answer.problem);
        if (answer.answer.kind == SourceAnswer::Kind::none)
            continue;
        apply_answer(answer.answer, source + (answer.from_cache ? " (cached)" : ""), at, result);
        return true;
    }
    return false;
}

bool check_distribution_points(X509 *certificate, X509 *issuer, std::time_t at,
                               const RevocationOptions &options, const RevocationCache &cache,
                               CertificateRevocation &result) {
    for (const auto &url : crl_distribution_points(certificate)) {
        std::string source = "CRL " + url;
        bool from_cache = false;
        X509CrlPtr crl;
        try {
            crl = fetch_crl(url, options, cache, from_cache);
        } catch (const Error &error) {
            add_problem(result, source, error.what());
            continue;
        }
        SourceAnswer answer = check_against_crl(crl.get(), certificate, issuer, at);
        add_problem(result, source,
                    answer.problem.empty() && answer.kind == SourceAnswer::Kind::none
                        ? "the CRL is not from the certificate's issuer"
                        : answer.problem);
        if (answer.kind == SourceAnswer::Kind::none)
            continue;
        apply_answer(answer, source + (from_cache ? " (cached)" : ""), at, result);
        return true;
    }
    return false;
}

int severity(RevocationStatus status) {
    switch (status) {
    case RevocationStatus::revoked:
        return 3;
    case RevocationStatus::unknown:
        return 2;
    case RevocationStatus::not_checked:
        return 1;
    case RevocationStatus::good:
        break;
    }
    return 0;
}

} // namespace

std::string status_name(RevocationStatus status) {
    switch (status) {
    case RevocationStatus::good:
        return "good";
    case RevocationStatus::revoked:
        return "revoked";
    case RevocationStatus::unknown:
        return "unknown";
    case RevocationStatus::not_checked:
        break;
    }
    return "not-checked";
}

RevocationChecker::RevocationChecker(const RevocationOptions &options) : options_(options) {
    std::vector<std::string> files = options.crl_files;
    if (options.crl_dir)
        for (auto &file : crl_files_in(*options.crl_dir))
            files.push_back(std::move(file));
    for (const auto &file : files)
        for (auto &crl : read_crl_file(file))
            crls_.push_back({"CRL file " + file, std::move(crl)});
}

CertificateRevocation RevocationChecker::check_certificate(X509 *certificate, X509 *issuer,
                                                           std::time_t at, X509_STORE *trust,
                                                           STACK_OF(X509) * untrusted) const {
    CertificateRevocation result;
    result.subject = name_text(X509_get_subject_name(certificate));
    std::vector<std::pair<std::string, X509_CRL *>> local;
    for (const auto &entry : crls_)
        local.emplace_back(entry.source, entry.crl.get());
    if (check_local_crls(local, certificate, issuer, at, result))
        return result;
    if (!options_.online) {
        result.status = crls_.empty() ? RevocationStatus::not_checked : RevocationStatus::unknown;
        if (!crls_.empty() && result.problems.empty())
            result.problems.push_back("no CRL given from the certificate's issuer");
        return result;
    }

    RevocationCache cache(options_.cache_dir);
    if (check_ocsp(certificate, issuer, at, trust, untrusted, options_, cache, result) ||
        check_distribution_points(certificate, issuer, at, options_, cache, result)) {
        for (const auto &problem : cache.problems())
            result.problems.push_back(problem);
        return result;
    }
    result.status = RevocationStatus::unknown;
    if (result.problems.empty())
        result.problems.push_back("the certificate names no OCSP responder and no CRL "
                                  "distribution point");
    for (const auto &problem : cache.problems())
        result.problems.push_back(problem);
    return result;
}

RevocationReport RevocationChecker::check(STACK_OF(X509) * chain, std::time_t at,
                                          X509_STORE *trust, STACK_OF(X509) * untrusted) const {
    RevocationReport report;
    report.online = options_.online;
    int count = sk_X509_num(chain);
    if (count < 2) {
        report.status = RevocationStatus::good;
        report.note = "the signer certificate is itself a trust anchor";
        return report;
    }
    report.status = RevocationStatus::good;
    for (int i = 0; i + 1 < count; ++i) {
        CertificateRevocation result = check_certificate(
            sk_X509_value(chain, i), sk_X509_value(chain, i + 1), at, trust, untrusted);
        if (severity(result.status) > severity(report.status))
            report.status = result.status;
        report.certificates.push_back(std::move(result));
    }
    return report;
}

} // namespace p11smime
