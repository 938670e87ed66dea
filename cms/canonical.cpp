#include "cms/canonical.h"

#include "cms/gmime_ptr.h"
#include "common/error.h"

namespace p11smime {

CanonicalEntity::CanonicalEntity(const MessageHeaders &headers, const MessageSource &source,
                                 const std::string &temp_folder)
    : headers_(headers), source_(source) {
    std::string content_headers;
    for (const auto &header : headers.content_headers)
        content_headers += header.raw;

    if (declares_8bit(headers) || needs_transfer_encoding(content_headers) ||
        body_needs_encoding()) {
        reencode(temp_folder);
        return;
    }
    prefix_ = to_crlf(content_headers + "\n");
}

bool CanonicalEntity::body_needs_encoding() const {
    TransferEncodingScan scan;
    SourceRangeReader body(source_, headers_.body_offset, source_.size());
    std::vector<char> buffer(buffer_size_for(body.size_hint()));
    while (size_t count = body.read(buffer.data(), buffer.size())) {
        scan.update(buffer.data(), count);
        if (scan.needed())
            return true;
    }
    return scan.needed();
}

// GMime picks quoted-printable or base64 for the body and writes the entity in CRLF. Parsed
// from a file stream, it reads the body from the file instead of copying it into memory.
void CanonicalEntity::reencode(const std::string &temp_folder) {
    GPtr<GMimeMessage> parsed = parse_message(source_);
    GMimeObject *part = parsed ? g_mime_message_get_mime_part(parsed.get()) : nullptr;
    if (!part)
        throw Error("cannot re-encode the message body for signing");
    encode_leaves_7bit(part);

    FormatOptionsPtr format(g_mime_format_options_new());
    g_mime_format_options_set_newline_format(format.get(), GMIME_NEWLINE_FORMAT_DOS);
    reencoded_ = std::make_unique<Scratch>(is_small(source_), temp_folder);
    reencoded_->write_object(part, format.get());
    reencoded_source_.emplace(reencoded_->source());
}

std::unique_ptr<Reader> CanonicalEntity::open(bool report) const {
    if (reencoded_source_)
        return std::make_unique<CrlfReader>(
            std::make_unique<SourceRangeReader>(*reencoded_source_, 0, reencoded_source_->size()));

    std::vector<std::unique_ptr<Reader>> parts;
    parts.push_back(std::make_unique<StringReader>(prefix_));
    parts.push_back(std::make_unique<CrlfReader>(std::make_unique<SourceRangeReader>(
        source_, headers_.body_offset, source_.size(), report)));
    return std::make_unique<ChainReader>(std::move(parts));
}

} // namespace p11smime
