#include "cms/verify.h"

#include <strings.h>
#include <sys/stat.h>

#include <ctime>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cms/cms_split.h"
#include "cms/mime.h"
#include "cms/signed_part.h"
#include "cms/stream.h"
#include "cms/trust_checks.h"
#include "common/x509_text.h"
#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {
namespace {

const ASN1_TIME *signing_time_value(CMS_SignerInfo *signer) {
    int index = CMS_signed_get_attr_by_NID(signer, NID_pkcs9_signingTime, -1);
    X509_ATTRIBUTE *attribute = index >= 0 ? CMS_signed_get_attr(signer, index) : nullptr;
    ASN1_TYPE *value = attribute ? X509_ATTRIBUTE_get0_type(attribute, 0) : nullptr;
    if (!value || (value->type != V_ASN1_UTCTIME && value->type != V_ASN1_GENERALIZEDTIME))
        return nullptr;
    return reinterpret_cast<const ASN1_TIME *>(value->value.asn1_string);
}

std::string signing_time(CMS_SignerInfo *signer) {
    const ASN1_TIME *time = signing_time_value(signer);
    if (!time)
        return {};
    BioPtr bio(BIO_new(BIO_s_mem()));
    ASN1_TIME_print_ex(bio.get(), time, ASN1_DTFLGS_ISO8601);
    return memory_bio_text(bio.get());
}

long long signing_time_unix(CMS_SignerInfo *signer) {
    const ASN1_TIME *time = signing_time_value(signer);
    tm broken_down{};
    if (!time || ASN1_TIME_to_tm(time, &broken_down) != 1)
        return 0;
    return static_cast<long long>(timegm(&broken_down));
}


std::string algorithm_name(const X509_ALGOR *algorithm) {
    const ASN1_OBJECT *object = nullptr;
    X509_ALGOR_get0(&object, nullptr, nullptr, algorithm);
    int nid = OBJ_obj2nid(object);
    if (nid != NID_undef)
        return OBJ_nid2ln(nid);
    char text[80];
    OBJ_obj2txt(text, sizeof text, object, 1);
    return text;
}

X509StackPtr load_certificates(const std::vector<std::string> &files) {
    X509StackPtr certificates(sk_X509_new_null());
    for (const auto &file : files) {
        BioPtr bio(BIO_new_file(file.c_str(), "r"));
        if (!bio)
            throw OpensslError("cannot open signer certificate file '" + file + "'");
        X509Ptr certificate(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
        if (!certificate) {
            BIO_reset(bio.get());
            clear_openssl_errors();
            certificate.reset(d2i_X509_bio(bio.get(), nullptr));
        }
        if (!certificate)
            throw OpensslError("cannot read a PEM or DER certificate from '" + file + "'");
        sk_X509_push(certificates.get(), certificate.release());
    }
    return certificates;
}

void check_anchor_options(const VerifyOptions &options) {
    struct stat status {};
    if (options.ca_path &&
        (stat(options.ca_path->c_str(), &status) != 0 || !S_ISDIR(status.st_mode)))
        throw Error("CA directory '" + *options.ca_path + "' is not a directory",
                    "give --ca-path a folder hashed by 'openssl rehash'");
    if (options.ca_file && stat(options.ca_file->c_str(), &status) != 0)
        throw Error("CA file '" + *options.ca_file + "' does not exist",
                    "give --ca-file a file of PEM certificates");
    if (!options.system_ca && !options.ca_file && !options.ca_path)
        throw Error("no trust anchors: --no-system-ca is given without --ca-file or --ca-path",
                    "name the CA that issued the signer's certificate with --ca-file");
}

X509StorePtr trust_store(const VerifyOptions &options) {
    X509StorePtr store(X509_STORE_new());
    if (!store)
        throw OpensslError("cannot create a certificate store");
    if (options.ca_file && !X509_STORE_load_file(store.get(), options.ca_file->c_str()))
        throw OpensslError("cannot load CA file '" + *options.ca_file + "'",
                           "give a file of PEM certificates to --ca-file");
    if (options.ca_path && !X509_STORE_load_path(store.get(), options.ca_path->c_str()))
        throw OpensslError("cannot use CA directory '" + *options.ca_path + "'",
                           "run 'openssl rehash' on it");
    if (options.system_ca && !X509_STORE_set_default_paths(store.get()))
        throw OpensslError("cannot load the system trust store");
    clear_openssl_errors();
    return store;
}

CmsPtr parse_cms(const std::string &der) {
    const auto *bytes = reinterpret_cast<const unsigned char *>(der.data());
    CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &bytes, static_cast<long>(der.size())));
    if (!cms)
        throw OpensslError("the signature is not a valid CMS structure",
                           "the message was damaged in transit or is not S/MIME");
    if (OBJ_obj2nid(CMS_get0_type(cms.get())) != NID_pkcs7_signed)
        throw Error(std::string("the S/MIME part contains CMS ") +
                        OBJ_nid2ln(OBJ_obj2nid(CMS_get0_type(cms.get()))) +
                        " instead of signed data",
                    "use 'p11smime decrypt' for encrypted messages");
    return cms;
}

// Returns a BIO that reads content. OpenSSL 3.0's CMS_verify copies the content of a memory
// BIO and leaks the copy when CMS_dataInit fails, as on a SignedData with an empty
// digestAlgorithms SET; a buffer BIO in front is not a memory BIO, so no copy is made.
BioPtr content_bio(const std::string &content) {
    BioPtr memory(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
    BioPtr buffer(BIO_new(BIO_f_buffer()));
    if (!memory || !buffer)
        throw OpensslError("cannot allocate a buffer");
    BIO_push(buffer.get(), memory.release());
    return buffer;
}

// Checks the signature value over the content read from content, but not the certificate,
// so that a path failure and a content failure are reported as what they are.
bool check_signature(CMS_ContentInfo *cms, STACK_OF(X509) * extra, BIO *content,
                     std::string &failure) {
    unsigned int flags = CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY | CMS_DETACHED;
    clear_openssl_errors();
    if (CMS_verify(cms, extra, nullptr, content, nullptr, flags) == 1)
        return true;

    unsigned long error = ERR_peek_error();
    int reason = ERR_GET_LIB(error) == ERR_LIB_CMS ? ERR_GET_REASON(error) : 0;
    std::string detail = drain_openssl_errors();
    if (reason == CMS_R_SIGNER_CERTIFICATE_NOT_FOUND)
        failure = "the signer certificate is not in the message; pass it with --signer-cert";
    else if (reason == CMS_R_VERIFICATION_FAILURE || reason == CMS_R_CONTENT_VERIFY_ERROR)
        failure = "the signature does not match the content: the message was altered after "
                  "signing";
    else if (reason == CMS_R_NO_CONTENT)
        failure = "the signed-data carries no content to verify";
    else
        failure = "the signature cannot be checked: " +
                  (detail.empty() ? std::string("OpenSSL gave no reason") : detail);
    return false;
}

// Validates the path of signer at the given time, and returns it when it is valid.
X509StackPtr check_certificate(X509_STORE *store, X509 *signer, STACK_OF(X509) * untrusted,
                               std::time_t at, SignerReport &report) {
    X509StoreCtxPtr context(X509_STORE_CTX_new());
    if (!context || !X509_STORE_CTX_init(context.get(), store, signer, untrusted))
        throw OpensslError("cannot set up certificate validation");
    X509_STORE_CTX_set_default(context.get(), "smime_sign");
    X509_STORE_CTX_set_purpose(context.get(), X509_PURPOSE_SMIME_SIGN);
    X509_STORE_CTX_set_time(context.get(), 0, at);

    X509StackPtr chain;
    report.certificate_valid = X509_verify_cert(context.get()) == 1;
    if (report.certificate_valid)
        chain.reset(X509_STORE_CTX_get1_chain(context.get()));
    if (!report.certificate_valid) {
        int error = X509_STORE_CTX_get_error(context.get());
        report.certificate_error = X509_verify_cert_error_string(error);
        if (error == X509_V_ERR_INVALID_PURPOSE)
            report.certificate_error += " (S/MIME signing needs key usage digitalSignature or "
                                        "nonRepudiation, and emailProtection in any EKU)";
    }
    clear_openssl_errors();
    return chain;
}

bool same_address(const std::string &a, const std::string &b) {
    return a.size() == b.size() && strncasecmp(a.c_str(), b.c_str(), a.size()) == 0;
}

SignerReport describe_signer(CMS_SignerInfo *info) {
    SignerReport report;
    X509 *certificate = nullptr;
    X509_ALGOR *digest = nullptr;
    X509_ALGOR *signature = nullptr;
    CMS_SignerInfo_get0_algs(info, nullptr, &certificate, &digest, &signature);
    report.digest = digest ? algorithm_name(digest) : "";
    report.signature_algorithm = signature ? algorithm_name(signature) : "";
    report.signing_time = signing_time(info);
    report.signing_time_unix = signing_time_unix(info);
    if (!certificate)
        return report;
    report.subject = name_text(X509_get_subject_name(certificate));
    report.fingerprint_sha1 = certificate_fingerprint(certificate);
    if (EVP_PKEY *key = X509_get0_pubkey(certificate))
        report.key_type = EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "";
    report.issuer = name_text(X509_get_issuer_name(certificate));
    report.serial = serial_hex(certificate);
    report.emails = certificate_emails(certificate);
    return report;
}

// Validates the path of one signer at the time options ask for, then checks its revocation.
void check_signer_trust(CMS_SignerInfo *info, X509 *certificate, X509_STORE *store,
                        STACK_OF(X509) * untrusted, const RevocationChecker &revocation,
                        const VerifyOptions &options, const VerifyResult &result,
                        SignerReport &report) {
    std::optional<std::time_t> signing = signing_time_of(info);
    std::time_t at = choose_validation_time(options.at_time, signing, report);
    add_time_notes(certificate, signing, result.date, report);
    report.capabilities = smime_capabilities(info);
    report.certificate_der = certificate_der(certificate);
    report.revocation.online = options.revocation.online;

    X509StackPtr chain = check_certificate(store, certificate, untrusted, at, report);
    if (chain && report.time_failure.empty())
        report.revocation = revocation.check(chain.get(), at, store, untrusted);
}

// Smallest RSA or DSA signer key accepted, in bits: under it a key gives less than the 112-bit
// security that NIST SP 800-131A requires for signatures since 2014.
constexpr int min_signer_key_bits = 2048;

int digest_of(const X509_ALGOR *digest, const X509_ALGOR *signature) {
    const ASN1_OBJECT *object = nullptr;
    if (digest) {
        X509_ALGOR_get0(&object, nullptr, nullptr, digest);
        if (int nid = OBJ_obj2nid(object); nid != NID_undef)
            return nid;
    }
    int digest_nid = NID_undef;
    if (signature) {
        X509_ALGOR_get0(&object, nullptr, nullptr, signature);
        OBJ_find_sigid_algs(OBJ_obj2nid(object), &digest_nid, nullptr);
    }
    return digest_nid;
}

// Returns why the SignerInfo's digest or the signer's key is too weak, or an empty string.
// MD2, MD4 and MD5 have practical collisions and are always rejected. SHA-1 has
// chosen-prefix collisions (Leurent and Peyrin, 2020), so it passes only when allowed, and
// then with a warning. A signature algorithm that names a digest (sha1WithRSAEncryption) is
// checked as well as digestAlgorithm.
std::string check_algorithms(CMS_SignerInfo *info, const VerifyOptions &options,
                             VerifyResult &result) {
    X509 *certificate = nullptr;
    X509_ALGOR *digest = nullptr;
    X509_ALGOR *signature = nullptr;
    CMS_SignerInfo_get0_algs(info, nullptr, &certificate, &digest, &signature);

    int digest_nid = digest_of(digest, signature);
    if (digest_nid == NID_md5 || digest_nid == NID_md4 || digest_nid == NID_md2)
        return std::string("the signature uses the broken digest ") + OBJ_nid2sn(digest_nid);
    if (digest_nid == NID_sha1 && !options.allow_sha1)
        return "the signature uses SHA-1, which is rejected unless --allow-sha1 is given";
    if (digest_nid == NID_sha1)
        result.warnings.push_back("the signature uses SHA-1, which is accepted only because "
                                  "of --allow-sha1");

    EVP_PKEY *key = certificate ? X509_get0_pubkey(certificate) : nullptr;
    int type = key ? EVP_PKEY_get_base_id(key) : EVP_PKEY_NONE;
    bool rsa_or_dsa = type == EVP_PKEY_RSA || type == EVP_PKEY_RSA_PSS || type == EVP_PKEY_DSA;
    if (rsa_or_dsa && EVP_PKEY_get_bits(key) < min_signer_key_bits)
        return "the signer's " + std::string(type == EVP_PKEY_DSA ? "DSA" : "RSA") + " key has " +
               std::to_string(EVP_PKEY_get_bits(key)) + " bits, fewer than " +
               std::to_string(min_signer_key_bits);
    return {};
}

void check_signers(CMS_ContentInfo *cms, STACK_OF(X509) * extra, bool signature_valid,
                   const VerifyOptions &options, const std::vector<std::string> &from_addresses,
                   VerifyResult &result) {
    X509StorePtr store = trust_store(options);
    RevocationChecker revocation(options.revocation);
    X509StackPtr untrusted(CMS_get1_certs(cms));
    if (!untrusted)
        untrusted.reset(sk_X509_new_null());
    for (int i = 0; i < sk_X509_num(extra); ++i) {
        X509_up_ref(sk_X509_value(extra, i));
        sk_X509_push(untrusted.get(), sk_X509_value(extra, i));
    }

    STACK_OF(CMS_SignerInfo) *infos = CMS_get0_SignerInfos(cms);
    for (int i = 0; i < sk_CMS_SignerInfo_num(infos); ++i) {
        CMS_SignerInfo *info = sk_CMS_SignerInfo_value(infos, i);
        SignerReport report = describe_signer(info);
        report.signature_valid = signature_valid;
        report.algorithm_error = check_algorithms(info, options, result);
        X509 *certificate = nullptr;
        CMS_SignerInfo_get0_algs(info, nullptr, &certificate, nullptr, nullptr);
        if (certificate) {
            check_signer_trust(info, certificate, store.get(), untrusted.get(), revocation,
                               options, result, report);
            report.sender_matches = !from_addresses.empty();
            for (const auto &from : from_addresses) {
                bool listed = false;
                for (const auto &email : report.emails)
                    listed |= same_address(email, from);
                report.sender_matches &= listed;
            }
        }
        result.signers.push_back(std::move(report));
    }
}

void collect_failures(const VerifyOptions &options, VerifyResult &result) {
    if (result.signers.empty())
        result.failures.push_back("the signed-data has no SignerInfo");
    for (const auto &signer : result.signers) {
        std::string who =
            signer.subject.empty() ? "the signer" : "signer '" + signer.subject + "'";
        if (!signer.algorithm_error.empty())
            result.failures.push_back(signer.algorithm_error);
        if (!signer.subject.empty() && !signer.certificate_valid)
            result.failures.push_back("certificate of " + who + " is not valid at " +
                                      signer.validation_time + ": " + signer.certificate_error);
        collect_trust_findings(options, signer, who, result);
        if (options.sender_check && !signer.subject.empty() && !signer.sender_matches) {
            if (result.from.empty())
                result.failures.push_back("the message has no From address to check against " +
                                          who);
            else
                result.failures.push_back("From address '" + result.from +
                                          "' is not an email address of " + who +
                                          " (every From mailbox must be)");
        }
    }
    result.valid = result.failures.empty();
}

// Writes the verified content, the signed entity alone, in the input's line endings. The
// outer routing headers are not signed, so they are left out; decrypt_message puts them back
// around each layer it unwraps.
void write_content(const MessageHeaders &split, Reader &content, BIO *out) {
    CrlfConverter crlf;
    LfConverter lf;
    std::string converted;
    copy_all(content, [&](const char *data, size_t size) {
        converted.clear();
        if (split.crlf)
            crlf.convert(data, size, converted);
        else
            lf.convert(data, size, converted);
        write_bio(out, converted, "the verified content");
    });
    converted.clear();
    lf.finish(converted);
    write_bio(out, converted, "the verified content");
}

// Checks a multipart/signed: the content is the first part, read from the input again.
bool verify_multipart(const MessageSource &source, const SignedPart &part,
                     STACK_OF(X509) * extra, CmsPtr &cms, std::string &failure) {
    cms = parse_cms(part.der);
    std::unique_ptr<Reader> content =
        std::make_unique<SourceRangeReader>(source, part.content_start, part.content_end, true);
    if (!part.binary)
        content = std::make_unique<CrlfReader>(std::move(content));
    ReaderBio bio(*content);
    bool valid = check_signature(cms.get(), extra, bio.get(), failure);
    bio.rethrow();
    return valid;
}

// Checks an application/pkcs7-mime signed-data: its content is taken out of the CMS
// structure into scratch storage, then read from there as detached content.
bool verify_opaque(const SignedPart &part, STACK_OF(X509) * extra, Scratch &content,
                   CmsPtr &cms, std::string &failure) {
    std::unique_ptr<Reader> type_reader = decoded_content_reader(part.cms_part);
    int nid = peek_cms_type(*type_reader);
    if (nid != NID_pkcs7_signed)
        throw Error(std::string("the S/MIME part contains CMS ") +
                        (nid == NID_undef ? "of an unknown type" : OBJ_nid2ln(nid)) +
                        " instead of signed data",
                    "use 'p11smime decrypt' for encrypted messages");

    std::unique_ptr<Reader> der = decoded_content_reader(part.cms_part);
    SplitCms split = split_cms(*der, [&content](const char *data, size_t size) {
        content.write(data, size);
    });
    cms = std::move(split.structure);
    if (!split.had_content)
        throw Error("the opaque signed-data carries no content (eContent is absent)",
                    "a detached signature needs its content: expect multipart/signed");

    MessageSource source = content.source();
    SourceRangeReader reader(source, 0, source.size());
    ReaderBio bio(reader);
    bool valid = check_signature(cms.get(), extra, bio.get(), failure);
    bio.rethrow();
    return valid;
}

} // namespace

VerifyResult verify_stream(const MessageSource &source, const VerifyOptions &options,
                           BIO *content_out) {
    clear_openssl_errors();
    check_anchor_options(options);
    MessageHeaders split = read_headers(source);
    GPtr<GMimeMessage> parsed = parse_message(source);
    SignedPart part = find_signed_part(source, parsed.get());

    VerifyResult result;
    result.structure = part.opaque ? "signed-data" : "multipart/signed";
    result.part = part.part.empty() ? "1" : part.part;
    result.from = split.from_address;
    result.date = header_value(split, "Date");
    if (!part.part.empty())
        result.warnings.push_back("only part " + part.part +
                                  " is signed; other parts of the message are not");

    X509StackPtr extra = load_certificates(options.signer_certificate_files);
    std::string failure;
    CmsPtr cms;
    Scratch opaque_content(is_small(source), scratch_folder(options.temp_folder));
    bool signature_valid =
        part.opaque ? verify_opaque(part, extra.get(), opaque_content, cms, failure)
                    : verify_multipart(source, part, extra.get(), cms, failure);
    if (!signature_valid) {
        result.failures.push_back(failure);
    } else if (content_out && part.opaque) {
        MessageSource content = opaque_content.source();
        SourceRangeReader reader(content, 0, content.size());
        write_content(split, reader, content_out);
    } else if (content_out) {
        SourceRangeReader reader(source, part.content_start, part.content_end);
        write_content(split, reader, content_out);
    }

    check_signers(cms.get(), extra.get(), signature_valid, options, split.from_addresses, result);
    if (options.sender_check && split.from_header_count > 1)
        result.failures.push_back("the message has " + std::to_string(split.from_header_count) +
                                  " From header fields, so its sender is ambiguous");
    collect_failures(options, result);
    if (!signature_valid)
        result.valid = false;
    return result;
}

VerifyResult verify_message(const std::string &message, const VerifyOptions &options) {
    MessageSource source = MessageSource::from_memory(message);
    BioPtr content(BIO_new(BIO_s_mem()));
    if (!content)
        throw OpensslError("cannot allocate a buffer");
    VerifyResult result = verify_stream(source, options, content.get());
    result.content = memory_bio_text(content.get());
    return result;
}

std::string certificate_fingerprint(const X509 *certificate) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (X509_digest(certificate, EVP_sha1(), digest, &length) != 1)
        return {};
    static const char digits[] = "0123456789ABCDEF";
    std::string hex;
    for (unsigned int i = 0; i < length; ++i) {
        hex += digits[digest[i] >> 4];
        hex += digits[digest[i] & 0x0f];
    }
    return hex;
}

VerifyResult verify_detached(const std::string &content, const std::string &der,
                             const VerifyOptions &options) {
    clear_openssl_errors();
    VerifyResult result;
    result.structure = "detached";
    CmsPtr cms = parse_cms(der);
    X509StackPtr extra = load_certificates(options.signer_certificate_files);
    std::string failure;
    BioPtr data = content_bio(content);
    bool signature_valid = check_signature(cms.get(), extra.get(), data.get(), failure);
    if (!signature_valid)
        result.failures.push_back(failure);

    VerifyOptions without_sender = options;
    without_sender.sender_check = false;
    check_signers(cms.get(), extra.get(), signature_valid, without_sender, {}, result);
    collect_failures(without_sender, result);
    if (!signature_valid)
        result.valid = false;
    return result;
}

} // namespace p11smime
