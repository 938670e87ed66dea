#include "cms/cms_split.h"

#include <climits>
#include <cstring>

#include <openssl/asn1.h>
#include <openssl/objects.h>

#include "common/error.h"

namespace p11smime {
namespace {

// The header of one BER element (X.690 section 8.1), as ASN1_get_object() reads it.
struct Header {
    int tag = 0;
    int tag_class = 0;
    bool constructed = false;
    bool indefinite = false;
    uint64_t length = 0;      // of the contents; 0 when indefinite
    uint64_t content_end = 0; // input position after the contents, when definite
    std::string raw;          // the header bytes as read

    bool is_end_of_contents() const {
        return tag == 0 && tag_class == V_ASN1_UNIVERSAL && !constructed && length == 0;
    }
    bool is(int class_bits, int number) const { return tag_class == class_bits && tag == number; }
};

// X.690 section 8.1.3.5 allows up to 126 length octets, but a length over 2^63 is useless
// here. So a header read ahead is at most a tag octet, four tag number octets and nine length
// octets.
constexpr size_t max_header_size = 14;

// Reads BER elements from a Reader, keeping only a small window of it in memory.
class BerReader {
  public:
    explicit BerReader(Reader &reader) : reader_(reader) {}

    uint64_t position() const { return position_; }

    // Returns the next header and consumes it.
    Header read_header() {
        Header header = peek_header();
        consume(header.raw.size());
        header.content_end = position_ + header.length;
        return header;
    }

    // Returns the next header without consuming it.
    const Header &peek_header() {
        if (has_peeked_)
            return peeked_;
        fill(max_header_size);
        if (available() == 0)
            throw Error("the CMS structure ends early");
        const auto *start = reinterpret_cast<const unsigned char *>(&buffer_[begin_]);
        const unsigned char *cursor = start;
        long length = 0;
        Header header;
        // The window is followed by zero padding, so ASN1_get_object() cannot read past it,
        // and the largest omax keeps it from queuing an error for contents longer than the
        // window, which would cost more than the header itself on a stream of small pieces.
        int flags = ASN1_get_object(&cursor, &length, &header.tag, &header.tag_class, LONG_MAX);
        if (cursor == start || length < 0) {
            clear_openssl_errors();
            throw Error("the CMS structure is not valid BER");
        }
        if (static_cast<size_t>(cursor - start) > available())
            throw Error("the CMS structure ends early");
        header.constructed = (flags & V_ASN1_CONSTRUCTED) != 0;
        header.indefinite = (flags & 0x01) != 0;
        header.length = header.indefinite ? 0 : static_cast<uint64_t>(length);
        header.raw.assign(&buffer_[begin_], static_cast<size_t>(cursor - start));
        peeked_ = std::move(header);
        has_peeked_ = true;
        return peeked_;
    }

    // Passes the next length bytes to sink, in pieces.
    void read_bytes(uint64_t length, const std::function<void(const char *, size_t)> &sink) {
        while (length > 0) {
            fill(1);
            if (available() == 0)
                throw Error("the CMS structure ends early");
            size_t piece = static_cast<size_t>(std::min<uint64_t>(length, available()));
            sink(&buffer_[begin_], piece);
            consume(piece);
            length -= piece;
        }
    }

  private:
    size_t available() const { return end_ - begin_; }

    void consume(size_t size) {
        begin_ += size;
        position_ += size;
        has_peeked_ = false;
    }

    // Makes at least wanted bytes available, unless the input ends first.
    void fill(size_t wanted) {
        if (available() >= wanted || at_end_)
            return;
        if (begin_ > 0) {
            std::memmove(buffer_.data(), &buffer_[begin_], available());
            end_ -= begin_;
            begin_ = 0;
        }
        buffer_.resize(stream_chunk_size + max_header_size);
        while (available() < wanted && !at_end_) {
            size_t count = reader_.read(&buffer_[end_], stream_chunk_size - end_);
            at_end_ = count == 0;
            end_ += count;
        }
        std::memset(&buffer_[end_], 0, max_header_size);
    }

    Reader &reader_;
    std::vector<char> buffer_;
    size_t begin_ = 0;
    size_t end_ = 0;
    bool at_end_ = false;
    uint64_t position_ = 0;
    Header peeked_; // the header that peek_header() read, while has_peeked_ is set
    bool has_peeked_ = false;
};

// Builds the structure without its content. Every element on the path to the content is
// written again with an indefinite length (BER, X.690 section 8.1.3.6), so that leaving the
// content out needs no length of an enclosing element to be changed.
class Splitter {
  public:
    Splitter(Reader &der, const std::function<void(const char *, size_t)> &content)
        : input_(der), content_(content) {}

    SplitCms run() {
        Header content_info = expect_sequence();
        open_indefinite(content_info);
        std::string type = copy_element();
        int nid = object_nid(type);
        bool splittable = nid == NID_pkcs7_signed || nid == NID_pkcs7_enveloped ||
                          nid == NID_id_smime_ct_authEnvelopedData;

        SplitCms result;
        if (splittable)
            result.had_content = split_explicit_content(content_info);
        else
            copy_children(content_info);
        close_indefinite();
        result.structure = decode();
        return result;
    }

  private:
    // Reads the [0] EXPLICIT wrapper and the SignedData or EnvelopedData in it.
    bool split_explicit_content(const Header &content_info) {
        uint64_t end = end_of(content_info);
        bool had_content = false;
        while (!at_end(content_info, end)) {
            Header header = input_.read_header();
            if (!header.is(V_ASN1_CONTEXT_SPECIFIC, 0) || !header.constructed) {
                copy_rest(header);
                continue;
            }
            open_indefinite(header);
            Header inner = input_.read_header();
            if (!inner.is(V_ASN1_UNIVERSAL, V_ASN1_SEQUENCE))
                throw Error("the CMS content is not a SEQUENCE");
            open_indefinite(inner);
            had_content = split_content_info(inner);
            close_indefinite();
            finish(header);
            close_indefinite();
        }
        return had_content;
    }

    // Copies the children of SignedData or (Auth)EnvelopedData up to the first SEQUENCE,
    // which is the EncapsulatedContentInfo or EncryptedContentInfo, and splits that one.
    bool split_content_info(const Header &parent) {
        uint64_t end = end_of(parent);
        bool split = false;
        bool had_content = false;
        while (!at_end(parent, end)) {
            Header header = input_.read_header();
            if (split || !header.is(V_ASN1_UNIVERSAL, V_ASN1_SEQUENCE)) {
                copy_rest(header);
                continue;
            }
            split = true;
            open_indefinite(header);
            had_content = take_content(header);
            close_indefinite();
        }
        return had_content;
    }

    // Copies the children of an EncapsulatedContentInfo or EncryptedContentInfo except the
    // [0] content, whose octets go to the content sink.
    bool take_content(const Header &parent) {
        uint64_t end = end_of(parent);
        bool had_content = false;
        while (!at_end(parent, end)) {
            Header header = input_.read_header();
            if (header.is(V_ASN1_CONTEXT_SPECIFIC, 0)) {
                had_content = true;
                send_octets(header);
            } else {
                copy_rest(header);
            }
        }
        return had_content;
    }

    // Sends the octets of a primitive element, or of every primitive element inside a
    // constructed one, such as the pieces of a constructed OCTET STRING.
    void send_octets(const Header &header) {
        if (!header.constructed) {
            input_.read_bytes(header.length, content_);
            return;
        }
        uint64_t end = end_of(header);
        while (!at_end(header, end))
            send_octets(input_.read_header());
    }

    Header expect_sequence() {
        Header header = input_.read_header();
        if (!header.is(V_ASN1_UNIVERSAL, V_ASN1_SEQUENCE) || !header.constructed)
            throw Error("the input is not a CMS structure: it does not start with a SEQUENCE");
        return header;
    }

    // Returns the input position where a definite-length element's contents end.
    static uint64_t end_of(const Header &header) { return header.content_end; }

    // Tells whether the contents of header have been read: at its end position, or at the
    // end-of-contents octets of an indefinite length, which are then consumed.
    bool at_end(const Header &header, uint64_t end) {
        if (!header.indefinite)
            return input_.position() >= end;
        if (!input_.peek_header().is_end_of_contents())
            return false;
        input_.read_header();
        return true;
    }

    // Writes a new header for a constructed element: its tag octets and an indefinite length.
    void open_indefinite(const Header &header) {
        append(header.raw.substr(0, tag_octets(header.raw)));
        append(std::string(1, '\x80'));
    }

    void close_indefinite() { append(std::string(2, '\0')); }

    // Reads what remains of an element opened with open_indefinite() but not split.
    void finish(const Header &header) {
        uint64_t end = end_of(header);
        while (!at_end(header, end))
            copy_rest(input_.read_header());
    }

    void copy_children(const Header &header) {
        uint64_t end = end_of(header);
        while (!at_end(header, end))
            copy_rest(input_.read_header());
    }

    // Returns the next element whole, and appends it to the structure.
    std::string copy_element() {
        size_t start = structure_.size();
        copy_rest(input_.read_header());
        return structure_.substr(start);
    }

    // Appends an element whose header has been read: the header, then its contents.
    void copy_rest(const Header &header) {
        append(header.raw);
        if (!header.indefinite) {
            input_.read_bytes(header.length,
                              [this](const char *data, size_t size) { append(data, size); });
            return;
        }
        for (;;) {
            Header child = input_.read_header();
            if (child.is_end_of_contents()) {
                append(child.raw);
                return;
            }
            copy_rest(child);
        }
    }

    void append(const std::string &bytes) { append(bytes.data(), bytes.size()); }

    void append(const char *data, size_t size) {
        if (structure_.size() + size > max_cms_structure_size)
            throw Error("the CMS structure outside its content is over " +
                        std::to_string(max_cms_structure_size / (1024 * 1024)) + " MiB");
        structure_.append(data, size);
    }

    // X.690 section 8.1.2.4: a tag number over 30 follows the first octet in octets whose top
    // bit is set on all but the last.
    static size_t tag_octets(const std::string &raw) {
        if ((static_cast<unsigned char>(raw[0]) & 0x1f) != 0x1f)
            return 1;
        size_t count = 1;
        while (count < raw.size() && (static_cast<unsigned char>(raw[count]) & 0x80))
            ++count;
        return count + 1;
    }

    static int object_nid(const std::string &element) {
        const auto *bytes = reinterpret_cast<const unsigned char *>(element.data());
        ASN1_OBJECT *object = d2i_ASN1_OBJECT(nullptr, &bytes, static_cast<long>(element.size()));
        int nid = object ? OBJ_obj2nid(object) : NID_undef;
        ASN1_OBJECT_free(object);
        clear_openssl_errors();
        if (!object)
            throw Error("the CMS content type is not an OBJECT IDENTIFIER");
        return nid;
    }

    CmsPtr decode() const {
        const auto *bytes = reinterpret_cast<const unsigned char *>(structure_.data());
        CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &bytes, static_cast<long>(structure_.size())));
        if (!cms)
            throw OpensslError("the input is not a valid CMS structure");
        return cms;
    }

    BerReader input_;
    const std::function<void(const char *, size_t)> &content_;
    std::string structure_;
};

} // namespace

SplitCms split_cms(Reader &der, const std::function<void(const char *, size_t)> &content) {
    clear_openssl_errors();
    return Splitter(der, content).run();
}

void stream_cms(CMS_ContentInfo *cms, Reader &content, BIO *out) {
    BIO *chain = BIO_new_CMS(out, cms);
    if (!chain)
        throw OpensslError("cannot start writing the CMS structure");
    // The BIOs that BIO_new_CMS put in front of out are freed; out stays with the caller.
    auto free_chain = [&chain, out] {
        while (chain && chain != out) {
            BIO *next = BIO_pop(chain);
            BIO_free(chain);
            chain = next;
        }
    };
    try {
        copy_all(content, [chain](const char *data, size_t size) {
            write_bio(chain, data, size, "the CMS structure");
        });
        if (BIO_flush(chain) != 1)
            throw OpensslError("cannot finish the CMS structure");
    } catch (...) {
        free_chain();
        throw;
    }
    free_chain();
}

int peek_cms_type(Reader &der) {
    try {
        BerReader input(der);
        Header content_info = input.read_header();
        if (!content_info.is(V_ASN1_UNIVERSAL, V_ASN1_SEQUENCE) || !content_info.constructed)
            return NID_undef;
        Header type = input.read_header();
        if (!type.is(V_ASN1_UNIVERSAL, V_ASN1_OBJECT) || type.length > 64)
            return NID_undef;
        std::string element = type.raw;
        input.read_bytes(type.length, [&element](const char *data, size_t size) {
            element.append(data, size);
        });
        const auto *bytes = reinterpret_cast<const unsigned char *>(element.data());
        ASN1_OBJECT *object = d2i_ASN1_OBJECT(nullptr, &bytes, static_cast<long>(element.size()));
        int nid = object ? OBJ_obj2nid(object) : NID_undef;
        ASN1_OBJECT_free(object);
        clear_openssl_errors();
        return nid;
    } catch (const Error &) {
        return NID_undef;
    }
}

} // namespace p11smime
