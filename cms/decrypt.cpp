#include "cms/decrypt.h"

#include <strings.h>

#include <openssl/pem.h> // before cms.h, whose PEM_read_bio_CMS needs its macros

#include <openssl/cms.h>
#include <openssl/err.h>

#include "cms/cms_split.h"
#include "cms/gmime_ptr.h"
#include "cms/limits.h"
#include "cms/mime.h"
#include "cms/stream.h"
#include "common/x509_text.h"
#include "common/error.h"
#include "common/ossl.h"

namespace p11smime {
namespace {

// Deepest nesting of signed and encrypted layers that is unwrapped; a triple-wrapped message
// has three, and more than this is far beyond what mail clients produce.
constexpr int max_layers = 8;

enum class Structure { none, multipart_signed, signed_data, enveloped };

// The top-level S/MIME structure of a message, and how to read its CMS ContentInfo.
struct TopLevel {
    Structure structure = Structure::none;
    bool bare = false; // a bare CMS structure without MIME headers
    std::function<std::unique_ptr<Reader>()> open_cms;
};

Structure structure_of(int nid) {
    switch (nid) {
    case NID_pkcs7_signed:
        return Structure::signed_data;
    case NID_pkcs7_enveloped:
    case NID_id_smime_ct_authEnvelopedData:
        return Structure::enveloped;
    default:
        return Structure::none;
    }
}

bool is_p7m_part(GMimeObject *object) {
    if (GMIME_IS_APPLICATION_PKCS7_MIME(object))
        return true;
    if (!GMIME_IS_PART(object))
        return false;
    const char *name = g_mime_part_get_filename(GMIME_PART(object));
    size_t length = name ? strlen(name) : 0;
    return length >= 4 && strcasecmp(name + length - 4, ".p7m") == 0;
}

// Returns a reader of the bytes [start, end) of source decoded from encoding, reporting its
// progress through the source.
std::unique_ptr<Reader> decoded_range(const MessageSource &source, uint64_t start, uint64_t end,
                                      GMimeContentEncoding encoding) {
    GPtr<GMimeStream> whole(new_gmime_stream(source));
    GPtr<GMimeStream> range(g_mime_stream_substream(whole.get(), static_cast<gint64>(start),
                                                    static_cast<gint64>(end)));
    GPtr<GMimeStream> filtered(g_mime_stream_filter_new(range.get()));
    if (encoding == GMIME_CONTENT_ENCODING_BASE64 ||
        encoding == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
        encoding == GMIME_CONTENT_ENCODING_UUENCODE) {
        GPtr<GMimeFilter> decoder(g_mime_filter_basic_new(encoding, FALSE));
        g_mime_stream_filter_add(GMIME_STREAM_FILTER(filtered.get()), decoder.get());
    }
    auto reader = std::make_unique<GMimeStreamReader>(filtered.get());
    GMimeStream *position = range.get(); // kept alive by the filter stream that reads it
    reader->set_after_read([&source, position] {
        source.report_progress(static_cast<uint64_t>(g_mime_stream_tell(position)));
    });
    return reader;
}

// Reads a bare CMS structure in PEM, as openssl cms -outform PEM writes it: base64 between a
// "-----BEGIN" line and an "-----END" line.
TopLevel pem_structure(const MessageSource &source) {
    std::string first_line = source.read_range(0, 256);
    size_t line_end = first_line.find('\n');
    uint64_t tail_start = source.size() > 4096 ? source.size() - 4096 : 0;
    size_t end_marker = source.read_range(tail_start, 4096).rfind("-----END");
    if (line_end == std::string::npos || end_marker == std::string::npos)
        return {};
    uint64_t start = line_end + 1;
    uint64_t end = tail_start + end_marker;
    TopLevel top;
    top.bare = true;
    top.open_cms = [&source, start, end] {
        return decoded_range(source, start, end, GMIME_CONTENT_ENCODING_BASE64);
    };
    top.structure = structure_of(peek_cms_type(*top.open_cms()));
    return top.structure == Structure::none ? TopLevel{} : std::move(top);
}

// Classifies the top-level entity only: S/MIME parts nested in other multiparts are not
// decrypted, so an attacker cannot splice a captured ciphertext into a message of theirs
// and have it shown as part of it. Only the header block is parsed; the CMS structure is read
// from the body when it is needed. With bare_allowed, a bare CMS structure in DER or PEM is
// recognised too.
TopLevel classify(const MessageSource &source, bool bare_allowed) {
    std::string start = source.read_range(0, 16);
    if (bare_allowed && !start.empty() && static_cast<unsigned char>(start[0]) == 0x30) {
        TopLevel top;
        top.bare = true;
        top.open_cms = [&source] {
            return std::make_unique<SourceRangeReader>(source, 0, source.size(), true);
        };
        top.structure = structure_of(peek_cms_type(*top.open_cms()));
        if (top.structure != Structure::none)
            return top;
    }
    if (bare_allowed && start.rfind("-----BEGIN ", 0) == 0)
        if (TopLevel top = pem_structure(source); top.structure != Structure::none)
            return top;

    MessageHeaders headers;
    try {
        headers = read_headers(source);
    } catch (const Error &) {
        return {};
    }
    GPtr<GMimeMessage> parsed = parse_message(source.read_range(0, headers.body_offset));
    GMimeObject *part = parsed ? g_mime_message_get_mime_part(parsed.get()) : nullptr;
    TopLevel top;
    if (!part)
        return top;
    if (GMIME_IS_MULTIPART_SIGNED(part)) {
        top.structure = Structure::multipart_signed;
        return top;
    }
    if (!is_p7m_part(part))
        return top;
    GMimeContentEncoding encoding = g_mime_part_get_content_encoding(GMIME_PART(part));
    uint64_t body = headers.body_offset;
    top.open_cms = [&source, body, encoding] {
        return decoded_range(source, body, source.size(), encoding);
    };
    int nid = peek_cms_type(*top.open_cms());
    if (nid == NID_undef)
        throw Error("the application/pkcs7-mime part is not a valid CMS structure");
    top.structure = structure_of(nid);
    return top;
}

std::string describe_identifier(ASN1_OCTET_STRING *key_id, X509_NAME *issuer,
                                ASN1_INTEGER *serial) {
    if (issuer && serial) {
        char name[256];
        X509_NAME_oneline(issuer, name, sizeof name);
        BIGNUM *number = ASN1_INTEGER_to_BN(serial, nullptr);
        char *hex = number ? BN_bn2hex(number) : nullptr;
        std::string text = std::string("issuer ") + name + ", serial " + (hex ? hex : "?");
        OPENSSL_free(hex);
        BN_free(number);
        return text;
    }
    std::string text = "subject key identifier ";
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; key_id && i < ASN1_STRING_length(key_id); ++i) {
        unsigned char byte = ASN1_STRING_get0_data(key_id)[i];
        text += digits[byte >> 4];
        text += digits[byte & 0x0f];
    }
    return text;
}

std::vector<std::string> describe_recipients(CMS_ContentInfo *cms) {
    std::vector<std::string> result;
    STACK_OF(CMS_RecipientInfo) *infos = CMS_get0_RecipientInfos(cms);
    for (int i = 0; i < sk_CMS_RecipientInfo_num(infos); ++i) {
        CMS_RecipientInfo *info = sk_CMS_RecipientInfo_value(infos, i);
        ASN1_OCTET_STRING *key_id = nullptr;
        X509_NAME *issuer = nullptr;
        ASN1_INTEGER *serial = nullptr;
        int type = CMS_RecipientInfo_type(info);
        if (type == CMS_RECIPINFO_TRANS &&
            CMS_RecipientInfo_ktri_get0_signer_id(info, &key_id, &issuer, &serial))
            result.push_back(describe_identifier(key_id, issuer, serial));
        if (type != CMS_RECIPINFO_AGREE)
            continue;
        STACK_OF(CMS_RecipientEncryptedKey) *keys = CMS_RecipientInfo_kari_get0_reks(info);
        for (int k = 0; k < sk_CMS_RecipientEncryptedKey_num(keys); ++k)
            if (CMS_RecipientEncryptedKey_get0_id(sk_CMS_RecipientEncryptedKey_value(keys, k),
                                                  &key_id, nullptr, nullptr, &issuer, &serial))
                result.push_back(describe_identifier(key_id, issuer, serial));
    }
    return result;
}

bool is_recipient(CMS_ContentInfo *cms, X509 *certificate) {
    STACK_OF(CMS_RecipientInfo) *infos = CMS_get0_RecipientInfos(cms);
    for (int i = 0; i < sk_CMS_RecipientInfo_num(infos); ++i) {
        CMS_RecipientInfo *info = sk_CMS_RecipientInfo_value(infos, i);
        int type = CMS_RecipientInfo_type(info);
        if (type == CMS_RECIPINFO_TRANS && CMS_RecipientInfo_ktri_cert_cmp(info, certificate) == 0)
            return true;
        if (type != CMS_RECIPINFO_AGREE)
            continue;
        STACK_OF(CMS_RecipientEncryptedKey) *keys = CMS_RecipientInfo_kari_get0_reks(info);
        for (int k = 0; k < sk_CMS_RecipientEncryptedKey_num(keys); ++k)
            if (CMS_RecipientEncryptedKey_cert_cmp(sk_CMS_RecipientEncryptedKey_value(keys, k),
                                                   certificate) == 0)
                return true;
    }
    return false;
}

// Returns true when the RecipientInfo for certificate wraps the key with RSAES-OAEP.
bool uses_rsa_oaep(CMS_ContentInfo *cms, X509 *certificate) {
    STACK_OF(CMS_RecipientInfo) *infos = CMS_get0_RecipientInfos(cms);
    for (int i = 0; i < sk_CMS_RecipientInfo_num(infos); ++i) {
        CMS_RecipientInfo *info = sk_CMS_RecipientInfo_value(infos, i);
        if (CMS_RecipientInfo_type(info) != CMS_RECIPINFO_TRANS ||
            CMS_RecipientInfo_ktri_cert_cmp(info, certificate) != 0)
            continue;

        X509_ALGOR *algorithm = nullptr;
        if (CMS_RecipientInfo_ktri_get0_algs(info, nullptr, nullptr, &algorithm) != 1)
            return false;
        const ASN1_OBJECT *oid = nullptr;
        X509_ALGOR_get0(&oid, nullptr, nullptr, algorithm);
        return OBJ_obj2nid(oid) == NID_rsaesOaep;
    }
    return false;
}

std::string layer_type(CMS_ContentInfo *cms) {
    return OBJ_obj2nid(CMS_get0_type(cms)) == NID_id_smime_ct_authEnvelopedData
               ? "authEnveloped-data"
               : "enveloped-data";
}

struct Decrypted {
    bool ok = false;
    std::string detail;
    std::vector<unsigned long> error_codes;
};

// The placement of a decrypted entity: behind the routing headers of the message it came
// from, in that message's line endings. A bare CMS input has no headers, and its entity stays
// as it is.
struct Rewrap {
    std::string headers;
    bool crlf = false;
    bool bare = true;
};

// Writes an entity, in chunks, as its Rewrap describes.
class RewrapWriter {
  public:
    RewrapWriter(const Rewrap &rewrap, std::function<void(const char *, size_t)> sink)
        : rewrap_(rewrap), sink_(std::move(sink)) {}

    void write(const char *data, size_t size) {
        if (!started_) {
            sink_(rewrap_.headers.data(), rewrap_.headers.size());
            started_ = true;
        }
        if (rewrap_.bare) {
            sink_(data, size);
            return;
        }
        converted_.clear();
        if (rewrap_.crlf)
            crlf_.convert(data, size, converted_);
        else
            lf_.convert(data, size, converted_);
        sink_(converted_.data(), converted_.size());
    }

    void finish() {
        write(nullptr, 0);
        converted_.clear();
        lf_.finish(converted_);
        sink_(converted_.data(), converted_.size());
    }

  private:
    const Rewrap &rewrap_;
    std::function<void(const char *, size_t)> sink_;
    bool started_ = false;
    CrlfConverter crlf_;
    LfConverter lf_;
    std::string converted_;
};

// Largest start of a decrypted entity that is held to read its header block.
constexpr size_t max_entity_head = 64 * 1024;

// Sends the plaintext of a layer straight to the output when its header block shows that no
// further layer is inside, and to scratch storage otherwise, so that the last layer is written
// once. The first bytes are held until the header block is complete.
class PlaintextRouter {
  public:
    PlaintextRouter(const std::function<bool(const std::string &head)> &is_last,
                    RewrapWriter &output, Scratch &scratch)
        : is_last_(is_last), output_(output), scratch_(scratch) {}

    void write(const char *data, size_t size) {
        if (decided_) {
            route(data, size);
            return;
        }
        head_.append(data, size);
        if (header_block_end(head_) != std::string::npos || head_.size() >= max_entity_head)
            decide();
    }

    // Routes what is still held, after the last write.
    void finish() {
        if (!decided_)
            decide();
        if (to_output_)
            output_.finish();
    }

    bool went_to_output() const { return to_output_; }

  private:
    void decide() {
        decided_ = true;
        to_output_ = is_last_(head_);
        route(head_.data(), head_.size());
        head_.clear();
        head_.shrink_to_fit();
    }

    void route(const char *data, size_t size) {
        if (to_output_)
            output_.write(data, size);
        else
            scratch_.write(data, size);
    }

    const std::function<bool(const std::string &)> &is_last_;
    RewrapWriter &output_;
    Scratch &scratch_;
    std::string head_;
    bool decided_ = false;
    bool to_output_ = false;
};

// Decrypts the content-encryption key with key, then the content, which split_cms() took out
// of the structure into ciphertext, into plaintext. CMS_decrypt checks the tag of an
// AuthEnvelopedData only at the end, after writing the plaintext, so nothing of plaintext may
// be released before it returns success.
Decrypted decrypt_content(CMS_ContentInfo *cms, const DecryptionKey &key,
                          const MessageSource &ciphertext, PlaintextRouter &plaintext) {
    Decrypted result;
    clear_openssl_errors();
    SourceRangeReader reader(ciphertext, 0, ciphertext.size(), true);
    ReaderBio content(reader);
    SinkBio out([&plaintext](const char *data, size_t size) { plaintext.write(data, size); });
    if (CMS_decrypt_set1_pkey_and_peer(cms, key.key, key.certificate, nullptr) != 1 ||
        CMS_decrypt(cms, nullptr, nullptr, content.get(), out.get(), CMS_BINARY) != 1) {
        content.rethrow();
        out.rethrow();
        result.detail = drain_openssl_errors(&result.error_codes);
        return result;
    }
    plaintext.finish();
    result.ok = true;
    return result;
}

class Unwrapper {
  public:
    Unwrapper(const MessageSource &input, const KeyLookup &lookup, const VerifyOptions &options,
              bool verify, BIO *content_out)
        : lookup_(lookup), options_(options), verify_(verify), small_(is_small(input)),
          folder_(scratch_folder(options.temp_folder)), content_out_(content_out) {}

    DecryptResult run(const MessageSource &input);

  private:
    bool decrypt_layer(const TopLevel &top, const MessageSource &current, bool last);
    bool verify_layer(const std::string &type, const MessageSource &current);
    bool is_last_layer(const std::string &head, bool bare_allowed) const;
    const MessageSource &keep(std::unique_ptr<Scratch> scratch);
    void write_output(const char *data, size_t size) const {
        write_bio(content_out_, data, size, "the decrypted message");
    }

    const KeyLookup &lookup_;
    const VerifyOptions &options_;
    bool verify_;
    bool small_;
    std::string folder_;
    BIO *content_out_;
    DecryptResult result_;
    std::vector<std::unique_ptr<Scratch>> scratches_;
    std::vector<std::unique_ptr<MessageSource>> sources_;
    std::optional<Rewrap> pending_;             // how the last decrypted entity goes back
    const MessageSource *pending_entity_ = nullptr; // that entity, when not yet written
    bool output_written_ = false;
};

const MessageSource &Unwrapper::keep(std::unique_ptr<Scratch> scratch) {
    sources_.push_back(std::make_unique<MessageSource>(scratch->source()));
    scratches_.push_back(std::move(scratch));
    return *sources_.back();
}

// Tells from the start of a decrypted entity whether unwrapping stops after it, as the next
// round of Unwrapper::run() would decide. A header block too large to see whole, or an
// application/pkcs7-mime whose CMS type is still unknown, counts as another layer.
bool Unwrapper::is_last_layer(const std::string &head, bool bare_allowed) const {
    if (bare_allowed && !head.empty() &&
        (static_cast<unsigned char>(head[0]) == 0x30 || head.rfind("-----BEGIN ", 0) == 0))
        return false;
    size_t end = header_block_end(head);
    if (end == std::string::npos)
        return head.size() < max_entity_head; // a short entity without a blank line
    GPtr<GMimeMessage> parsed = parse_message(head.substr(0, end));
    GMimeObject *part = parsed ? g_mime_message_get_mime_part(parsed.get()) : nullptr;
    if (!part)
        return true;
    if (GMIME_IS_MULTIPART_SIGNED(part))
        return !verify_;
    return !is_p7m_part(part);
}

bool Unwrapper::decrypt_layer(const TopLevel &top, const MessageSource &current, bool last) {
    auto ciphertext = std::make_unique<Scratch>(small_, folder_);
    std::unique_ptr<Reader> der = top.open_cms();
    SplitCms split = split_cms(*der, [&ciphertext](const char *data, size_t size) {
        ciphertext->write(data, size);
    });
    CMS_ContentInfo *cms = split.structure.get();
    const MessageSource &encrypted = keep(std::move(ciphertext));

    Layer layer;
    layer.type = layer_type(cms);
    DecryptionKey key =
        lookup_([cms](X509 *certificate) { return is_recipient(cms, certificate); },
                describe_recipients(cms));
    layer.recipient = subject_oneline(key.certificate);
    layer.rsa_oaep = uses_rsa_oaep(cms, key.certificate);

    Rewrap rewrap;
    rewrap.bare = top.bare;
    if (!top.bare) {
        MessageHeaders headers = read_headers(current);
        for (const auto &header : headers.routing_headers)
            rewrap.headers += header.raw;
        rewrap.crlf = headers.crlf;
    }
    auto plaintext = std::make_unique<Scratch>(small_, folder_);
    RewrapWriter output(rewrap, [this](const char *data, size_t size) {
        write_output(data, size);
    });
    std::function<bool(const std::string &)> is_last = [this, &top,
                                                         last](const std::string &head) {
        return last || is_last_layer(head, top.bare);
    };
    PlaintextRouter router(is_last, output, *plaintext);
    Decrypted decrypted = split.had_content
                              ? decrypt_content(cms, key, encrypted, router)
                              : Decrypted{false, "the encrypted content is absent", {}};
    result_.layers.push_back(layer);
    if (!decrypted.ok) {
        result_.failures.push_back("the message cannot be decrypted with the key of " +
                                   layer.recipient + ", or it was altered");
        result_.decryption_failed = true;
        result_.detail = decrypted.detail;
        result_.error_codes = decrypted.error_codes;
        return false;
    }

    output_written_ = router.went_to_output();
    pending_ = std::move(rewrap);
    pending_entity_ = output_written_ ? nullptr : &keep(std::move(plaintext));
    return true;
}

bool Unwrapper::verify_layer(const std::string &type, const MessageSource &current) {
    Layer layer;
    layer.type = type;
    layer.has_verification = true;
    auto content = std::make_unique<Scratch>(small_, folder_);
    SinkBio out([&content](const char *data, size_t size) { content->write(data, size); });
    try {
        layer.verification = verify_stream(current, options_, out.get());
    } catch (const OpensslError &) {
        out.rethrow();
        throw;
    }
    bool valid = layer.verification.valid;
    for (const auto &failure : layer.verification.failures)
        result_.failures.push_back(failure);
    // The verified content is the signed entity alone. The headers of the message it came
    // from go back in front of it, as for a decrypted layer.
    MessageHeaders headers = read_headers(current);
    Rewrap rewrap;
    rewrap.bare = false;
    rewrap.crlf = headers.crlf;
    for (const auto &header : headers.routing_headers)
        rewrap.headers += header.raw;
    pending_ = std::move(rewrap);
    result_.layers.push_back(std::move(layer));
    keep(std::move(content));
    return valid;
}

DecryptResult Unwrapper::run(const MessageSource &input) {
    const MessageSource *current = &input;
    bool bare_allowed = true;
    bool encrypted = false;
    for (int depth = 0; depth < max_layers && !output_written_; ++depth) {
        TopLevel top = classify(*current, bare_allowed);
        if (top.structure == Structure::none)
            break;
        if (top.structure != Structure::enveloped && !verify_)
            break;
        if (pending_) {
            // The decrypted entity contains another layer, which is read with its headers back.
            auto rewrapped = std::make_unique<Scratch>(small_, folder_);
            RewrapWriter writer(*pending_, [&rewrapped](const char *data, size_t size) {
                rewrapped->write(data, size);
            });
            copy_all(*std::make_unique<SourceRangeReader>(*current, 0, current->size()),
                     [&writer](const char *data, size_t size) { writer.write(data, size); });
            writer.finish();
            bool bare = pending_->bare;
            pending_.reset();
            current = &keep(std::move(rewrapped));
            top = classify(*current, bare);
        }
        if (top.structure == Structure::enveloped) {
            encrypted = true;
            if (!decrypt_layer(top, *current, depth + 1 == max_layers))
                return std::move(result_);
            bare_allowed = top.bare;
            current = pending_entity_;
            continue;
        }
        bool opaque = top.structure == Structure::signed_data;
        if (!verify_layer(opaque ? "signed-data" : "multipart/signed", *current))
            return std::move(result_);
        current = sources_.back().get();
        bare_allowed = false;
    }
    if (!encrypted)
        throw Error("the message is not encrypted: no enveloped-data found at its top level",
                    "use 'p11smime verify' for a message that is only signed");

    if (pending_ && !output_written_) {
        RewrapWriter writer(*pending_, [this](const char *data, size_t size) {
            write_output(data, size);
        });
        copy_all(*std::make_unique<SourceRangeReader>(*current, 0, current->size()),
                 [&writer](const char *data, size_t size) { writer.write(data, size); });
        writer.finish();
    } else if (!output_written_) {
        SourceRangeReader reader(*current, 0, current->size());
        copy_all(reader, [this](const char *data, size_t size) { write_output(data, size); });
    }
    result_.valid = result_.failures.empty();
    return std::move(result_);
}

} // namespace

DecryptResult decrypt_stream(const MessageSource &source, const KeyLookup &lookup,
                             const VerifyOptions &verify_options, bool verify,
                             BIO *content_out) {
    Unwrapper unwrapper(source, lookup, verify_options, verify, content_out);
    return unwrapper.run(source);
}

DecryptResult decrypt_message(const std::string &message, const KeyLookup &lookup,
                              const VerifyOptions &verify_options, bool verify) {
    check_message_size(message);
    MessageSource source = MessageSource::from_memory(message);
    BioPtr content(BIO_new(BIO_s_mem()));
    if (!content)
        throw OpensslError("cannot allocate a buffer");
    DecryptResult result = decrypt_stream(source, lookup, verify_options, verify, content.get());
    if (result.valid)
        result.content = memory_bio_text(content.get());
    return result;
}

} // namespace p11smime
