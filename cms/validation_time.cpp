#include "cms/validation_time.h"

#include <gmime/gmime.h>
#include <openssl/cms.h>

#include "cms/mime.h"
#include "common/error.h"

namespace p11smime {
namespace {

std::optional<std::time_t> parse_utc(const std::string &text, const char *format) {
    std::tm fields{};
    const char *end = strptime(text.c_str(), format, &fields);
    if (!end || (*end != '\0' && !(end[0] == 'Z' && end[1] == '\0')))
        return std::nullopt;
    return timegm(&fields);
}

} // namespace

AtTime parse_at_time(const std::string &text) {
    if (text == "now")
        return {};
    if (text == "signing")
        return {AtTime::Kind::signing, 0};
    for (const char *format : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"}) {
        if (std::optional<std::time_t> time = parse_utc(text, format))
            return {AtTime::Kind::given, *time};
    }
    throw Error("invalid --at-time value '" + text + "'",
                "use now, signing, or a UTC date such as 2013-11-02 or 2013-11-02T20:28:04Z");
}

std::optional<std::time_t> to_time_t(const ASN1_TIME *time) {
    std::tm fields{};
    if (!time || ASN1_TIME_to_tm(time, &fields) != 1)
        return std::nullopt;
    return timegm(&fields);
}

std::optional<std::time_t> signing_time_of(CMS_SignerInfo *signer) {
    int index = CMS_signed_get_attr_by_NID(signer, NID_pkcs9_signingTime, -1);
    X509_ATTRIBUTE *attribute = index >= 0 ? CMS_signed_get_attr(signer, index) : nullptr;
    ASN1_TYPE *value = attribute ? X509_ATTRIBUTE_get0_type(attribute, 0) : nullptr;
    if (!value || (value->type != V_ASN1_UTCTIME && value->type != V_ASN1_GENERALIZEDTIME))
        return std::nullopt;
    return to_time_t(reinterpret_cast<const ASN1_TIME *>(value->value.asn1_string));
}

std::string iso8601(std::time_t time) {
    std::tm fields{};
    gmtime_r(&time, &fields);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &fields);
    return text;
}

std::optional<std::time_t> parse_date_header(const std::string &value) {
    ensure_gmime_initialised();
    GDateTime *date = g_mime_utils_header_decode_date(value.c_str());
    if (!date)
        return std::nullopt;
    std::time_t seconds = static_cast<std::time_t>(g_date_time_to_unix(date));
    g_date_time_unref(date);
    return seconds;
}

} // namespace p11smime
