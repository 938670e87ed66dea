// Internal to cms/: the MIME entity of a message in canonical form, read in chunks, for
// signing and encryption of messages of any size.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "cms/mime.h"
#include "cms/stream.h"

namespace p11smime {

// The entity that canonical_entity() returns, without holding it in memory: the content
// headers and blank line, then the body with every lone LF turned into CRLF. A body that
// needs a 7-bit transfer encoding is re-encoded by GMime once, into scratch storage.
class CanonicalEntity {
  public:
    // Scans the body of source to decide whether it needs re-encoding. Throws Error.
    CanonicalEntity(const MessageHeaders &headers, const MessageSource &source,
                    const std::string &temp_folder);

    // Returns a reader of the entity from its start. With report set, reading reports
    // progress through the message source.
    std::unique_ptr<Reader> open(bool report) const;

  private:
    bool body_needs_encoding() const;
    void reencode(const std::string &temp_folder);

    const MessageHeaders &headers_;
    const MessageSource &source_;
    std::string prefix_; // content headers and blank line, in CRLF
    std::unique_ptr<Scratch> reencoded_;
    std::optional<MessageSource> reencoded_source_;
};

} // namespace p11smime
