#include "cms/online.h"

#include <strings.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <openssl/evp.h>
#include <openssl/http.h>
#include <openssl/pem.h>

#include "cms/validation_time.h"
#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {
namespace {

// Clock skew allowed between this machine and an OCSP responder, in seconds.
constexpr long ocsp_leeway_seconds = 300;
// Upper bounds for response bodies: OCSP responses are small, and CRLs of large public CAs
// reach a few megabytes.
constexpr size_t max_ocsp_response_length = 100 * 1024;
constexpr size_t max_crl_length = 20 * 1024 * 1024;

using OcspRequestPtr = std::unique_ptr<OCSP_REQUEST, CDeleter<OCSP_REQUEST_free>>;
using OcspResponsePtr = std::unique_ptr<OCSP_RESPONSE, CDeleter<OCSP_RESPONSE_free>>;
using OcspBasicPtr = std::unique_ptr<OCSP_BASICRESP, CDeleter<OCSP_BASICRESP_free>>;
using OcspCertIdPtr = std::unique_ptr<OCSP_CERTID, CDeleter<OCSP_CERTID_free>>;

struct HttpUrl {
    std::string host;
    std::string port;
    std::string path;
};

HttpUrl parse_http_url(const std::string &url) {
    if (url.size() <= 7 || strncasecmp(url.c_str(), "http://", 7) != 0)
        throw Error("'" + url + "' is not an http:// URL, and only http:// URLs are fetched");
    char *host = nullptr, *port = nullptr, *path = nullptr, *query = nullptr;
    if (!OSSL_HTTP_parse_url(url.c_str(), nullptr, nullptr, &host, &port, nullptr, &path,
                             &query, nullptr))
        throw OpensslError("invalid URL '" + url + "'");
    HttpUrl parts{host, port, path};
    if (query)
        parts.path += std::string("?") + query;
    for (char *field : {host, port, path, query})
        OPENSSL_free(field);
    return parts;
}

std::string read_all(BIO *bio) {
    std::string data;
    char buffer[4096];
    int length = 0;
    while ((length = BIO_read(bio, buffer, sizeof buffer)) > 0)
        data.append(buffer, static_cast<size_t>(length));
    return data;
}

std::string der_of(const OCSP_CERTID *id) {
    unsigned char *der = nullptr;
    int length = i2d_OCSP_CERTID(const_cast<OCSP_CERTID *>(id), &der);
    std::string bytes = length > 0 ? std::string(reinterpret_cast<char *>(der), length) : "";
    OPENSSL_free(der);
    return bytes;
}

std::string der_of(OCSP_REQUEST *request) {
    unsigned char *der = nullptr;
    int length = i2d_OCSP_REQUEST(request, &der);
    std::string bytes = length > 0 ? std::string(reinterpret_cast<char *>(der), length) : "";
    OPENSSL_free(der);
    return bytes;
}

OcspResponsePtr parse_response(const std::string &der) {
    const auto *bytes = reinterpret_cast<const unsigned char *>(der.data());
    OcspResponsePtr response(d2i_OCSP_RESPONSE(nullptr, &bytes, static_cast<long>(der.size())));
    clear_openssl_errors();
    return response;
}

std::string time_text(const ASN1_GENERALIZEDTIME *time) {
    std::optional<std::time_t> seconds = to_time_t(time);
    return seconds ? iso8601(*seconds) : "none";
}

struct Evaluation {
    SourceAnswer answer;
    bool cacheable = false; // the response has a nextUpdate
};

SourceAnswer problem(const std::string &text) {
    SourceAnswer answer;
    answer.problem = text;
    return answer;
}

SourceAnswer status_answer(int status, int reason, const ASN1_GENERALIZEDTIME *revoked_at) {
    SourceAnswer answer;
    if (status == V_OCSP_CERTSTATUS_UNKNOWN)
        return problem("the responder does not know the certificate (status unknown)");
    if (status == V_OCSP_CERTSTATUS_GOOD) {
        answer.kind = SourceAnswer::Kind::good;
        return answer;
    }
    answer.kind = SourceAnswer::Kind::revoked;
    answer.revocation_time = to_time_t(revoked_at);
    answer.reason = reason == OCSP_REVOKED_STATUS_NOSTATUS ? -1 : reason;
    return answer;
}

// Checks a response against what query_ocsp documents. request is null for a cached
// response, whose nonce belonged to an earlier request.
Evaluation evaluate_response(OCSP_RESPONSE *response, OCSP_REQUEST *request, OCSP_CERTID *id,
                             X509_STORE *trust, STACK_OF(X509) * untrusted) {
    Evaluation result;
    int response_status = OCSP_response_status(response);
    if (response_status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        result.answer = problem(std::string("the responder answered ") +
                                OCSP_response_status_str(response_status));
        return result;
    }
    OcspBasicPtr basic(OCSP_response_get1_basic(response));
    if (!basic) {
        result.answer = problem("the OCSP response has no basic response");
        return result;
    }
    if (request && OCSP_check_nonce(request, basic.get()) == 0) {
        result.answer = problem("the OCSP response's nonce does not match the request's");
        return result;
    }
    if (OCSP_basic_verify(basic.get(), untrusted, trust, 0) <= 0) {
        result.answer = problem("the OCSP response's signature is not valid: " +
                                drain_openssl_errors());
        return result;
    }

    int status = 0, reason = 0;
    ASN1_GENERALIZEDTIME *revoked_at = nullptr, *this_update = nullptr, *next_update = nullptr;
    if (!OCSP_resp_find_status(basic.get(), id, &status, &reason, &revoked_at, &this_update,
                               &next_update)) {
        result.answer = problem("the OCSP response has no status for the certificate");
        return result;
    }
    if (!OCSP_check_validity(this_update, next_update, ocsp_leeway_seconds, -1)) {
        clear_openssl_errors();
        result.answer = problem("the OCSP response is not current: thisUpdate " +
                                time_text(this_update) + ", nextUpdate " +
                                time_text(next_update));
        return result;
    }
    result.answer = status_answer(status, reason, revoked_at);
    result.cacheable = next_update != nullptr;
    return result;
}

OcspRequestPtr build_request(OCSP_CERTID *id) {
    OcspRequestPtr request(OCSP_REQUEST_new());
    OCSP_CERTID *copy = OCSP_CERTID_dup(id);
    if (!request || !copy || !OCSP_request_add0_id(request.get(), copy) ||
        !OCSP_request_add1_nonce(request.get(), nullptr, -1))
        throw OpensslError("cannot build an OCSP request");
    return request;
}

std::string sha256_hex(const std::string &data) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
    static const char digits[] = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < length; ++i) {
        hex += digits[digest[i] >> 4];
        hex += digits[digest[i] & 0xf];
    }
    return hex;
}

X509CrlPtr parse_crl(const std::string &bytes) {
    const auto *der = reinterpret_cast<const unsigned char *>(bytes.data());
    X509CrlPtr crl(d2i_X509_CRL(nullptr, &der, static_cast<long>(bytes.size())));
    if (!crl) {
        BioPtr bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
        crl.reset(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
    }
    clear_openssl_errors();
    return crl;
}

bool still_current(X509_CRL *crl) {
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    return next && X509_cmp_current_time(next) > 0;
}

} // namespace

std::string http_fetch(const std::string &url, const std::string *post_body,
                       const char *content_type, int timeout_seconds, size_t max_length) {
    clear_openssl_errors();
    HttpUrl parts = parse_http_url(url);
    BioPtr response;
    if (post_body) {
        BioPtr request(BIO_new_mem_buf(post_body->data(), static_cast<int>(post_body->size())));
        response.reset(OSSL_HTTP_transfer(
            nullptr, parts.host.c_str(), parts.port.c_str(), parts.path.c_str(), 0, nullptr,
            nullptr, nullptr, nullptr, nullptr, nullptr, 0, nullptr, content_type,
            request.get(), nullptr, 1, max_length, timeout_seconds, 0));
    } else {
        response.reset(OSSL_HTTP_get(url.c_str(), nullptr, nullptr, nullptr, nullptr, nullptr,
                                     nullptr, 0, nullptr, nullptr, 1, max_length,
                                     timeout_seconds));
    }
    if (!response)
        throw OpensslError("HTTP request to " + url + " failed");
    return read_all(response.get());
}

std::optional<std::string> RevocationCache::path(const std::string &kind,
                                                 const std::string &key) const {
    if (!folder_)
        return std::nullopt;
    return *folder_ + "/" + kind + "-" + sha256_hex(key) + ".der";
}

std::optional<std::string> RevocationCache::read(const std::string &kind,
                                                 const std::string &key) const {
    std::optional<std::string> file = path(kind, key);
    if (!file)
        return std::nullopt;
    std::ifstream stream(*file, std::ios::binary);
    if (!stream)
        return std::nullopt;
    std::ostringstream bytes;
    bytes << stream.rdbuf();
    return bytes.str();
}

void RevocationCache::write(const std::string &kind, const std::string &key,
                            const std::string &der) const {
    std::optional<std::string> file = path(kind, key);
    if (!file)
        return;
    std::error_code error;
    std::filesystem::create_directories(*folder_, error);
    std::string temporary = *folder_ + "/.tmp-XXXXXX";
    int descriptor = error ? -1 : mkstemp(temporary.data());
    bool written = descriptor >= 0 &&
                   ::write(descriptor, der.data(), der.size()) ==
                       static_cast<ssize_t>(der.size());
    if (descriptor >= 0 && ::close(descriptor) != 0)
        written = false;
    if (written && std::rename(temporary.c_str(), file->c_str()) == 0)
        return;
    if (descriptor >= 0)
        std::remove(temporary.c_str());
    problems_.push_back("cannot write the revocation cache in '" + *folder_ + "'");
}

OcspAnswer query_ocsp(X509 *certificate, X509 *issuer, const std::string &url,
                      X509_STORE *trust, STACK_OF(X509) * untrusted,
                      const RevocationOptions &options, const RevocationCache &cache) {
    OcspAnswer result;
    OcspCertIdPtr id(OCSP_cert_to_id(EVP_sha1(), certificate, issuer));
    if (!id) {
        result.answer = problem("cannot build an OCSP CertID: " + drain_openssl_errors());
        return result;
    }
    std::string key = der_of(id.get()) + url;
    if (std::optional<std::string> cached = cache.read("ocsp", key)) {
        OcspResponsePtr response = parse_response(*cached);
        Evaluation evaluation;
        if (response)
            evaluation = evaluate_response(response.get(), nullptr, id.get(), trust, untrusted);
        if (evaluation.answer.kind != SourceAnswer::Kind::none) {
            result.answer = evaluation.answer;
            result.from_cache = true;
            return result;
        }
    }

    OcspRequestPtr request = build_request(id.get());
    std::string body;
    try {
        std::string request_der = der_of(request.get());
        body = http_fetch(url, &request_der, "application/ocsp-request",
                          options.timeout_seconds, max_ocsp_response_length);
    } catch (const Error &error) {
        result.answer = problem(error.what());
        return result;
    }
    OcspResponsePtr response = parse_response(body);
    if (!response) {
        result.answer = problem("the answer from " + url + " is not an OCSP response");
        return result;
    }
    Evaluation evaluation =
        evaluate_response(response.get(), request.get(), id.get(), trust, untrusted);
    if (evaluation.cacheable)
        cache.write("ocsp", key, body);
    result.answer = evaluation.answer;
    return result;
}

X509CrlPtr fetch_crl(const std::string &url, const RevocationOptions &options,
                     const RevocationCache &cache, bool &from_cache) {
    from_cache = false;
    if (std::optional<std::string> cached = cache.read("crl", url)) {
        X509CrlPtr crl = parse_crl(*cached);
        if (crl && still_current(crl.get())) {
            from_cache = true;
            return crl;
        }
    }
    std::string body = http_fetch(url, nullptr, nullptr, options.timeout_seconds, max_crl_length);
    X509CrlPtr crl = parse_crl(body);
    if (!crl)
        throw Error("the file at " + url + " is not a CRL");
    if (X509_CRL_get0_nextUpdate(crl.get()))
        cache.write("crl", url, body);
    return crl;
}

} // namespace p11smime
