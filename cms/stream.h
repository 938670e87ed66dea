// Internal to cms/: the pieces that streaming operations compose. Readers pull bytes in
// chunks, converters change line endings across chunk borders, and BIO adapters connect both
// to OpenSSL.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gmime/gmime.h>

#include "cms/source.h"
#include "common/ossl.h"
#include "common/tempfile.h"

namespace p11smime {

// Bytes that streaming passes move at a time: large enough that per-call costs vanish next to
// hashing, small enough that buffers stay a small part of the memory bound.
constexpr size_t stream_chunk_size = 256 * 1024;

// Returns the size of a buffer for reading size_hint bytes: stream_chunk_size at most.
size_t buffer_size_for(uint64_t size_hint);

// A stream of bytes read in chunks.
class Reader {
  public:
    virtual ~Reader() = default;

    // Reads up to size bytes into buffer. Returns the number read, which is 0 only at the end.
    // Throws Error when the underlying read fails.
    virtual size_t read(char *buffer, size_t size) = 0;

    // Returns the most bytes that are left, when known, so that buffers for small inputs stay
    // small.
    virtual uint64_t size_hint() const { return UINT64_MAX; }
};

// The bytes [start, end) of a message source. With report set, it reports its progress
// through the source's progress function.
class SourceRangeReader : public Reader {
  public:
    SourceRangeReader(const MessageSource &source, uint64_t start, uint64_t end,
                      bool report = false)
        : source_(source), position_(start), end_(end), report_(report) {}
    size_t read(char *buffer, size_t size) override;
    uint64_t size_hint() const override { return end_ - position_; }

  private:
    const MessageSource &source_;
    uint64_t position_;
    uint64_t end_;
    bool report_;
};

// The bytes of a string that this reader owns.
class StringReader : public Reader {
  public:
    explicit StringReader(std::string text) : text_(std::move(text)) {}
    size_t read(char *buffer, size_t size) override;
    uint64_t size_hint() const override { return text_.size() - position_; }

  private:
    std::string text_;
    size_t position_ = 0;
};

// Several readers, one after another.
class ChainReader : public Reader {
  public:
    explicit ChainReader(std::vector<std::unique_ptr<Reader>> parts) : parts_(std::move(parts)) {}
    size_t read(char *buffer, size_t size) override;
    uint64_t size_hint() const override;

  private:
    std::vector<std::unique_ptr<Reader>> parts_;
    size_t current_ = 0;
};

// The bytes of a GMime stream, such as the decoded content of a MIME part.
class GMimeStreamReader : public Reader {
  public:
    explicit GMimeStreamReader(GMimeStream *stream); // takes a reference
    ~GMimeStreamReader() override;
    size_t read(char *buffer, size_t size) override;

    // Installs a function called after each read, such as a progress report.
    void set_after_read(std::function<void()> hook) { after_read_ = std::move(hook); }

  private:
    GMimeStream *stream_;
    std::function<void()> after_read_;
};

// Turns every lone LF into CRLF (RFC 5652 canonical text), also where a CRLF pair is split
// between two chunks.
class CrlfConverter {
  public:
    void convert(const char *data, size_t size, std::string &out);

  private:
    bool previous_cr_ = false;
};

// Turns every CRLF pair into LF, for output in a file that uses LF line endings. A CR at the
// end of a chunk is held until the next chunk shows whether an LF follows.
class LfConverter {
  public:
    void convert(const char *data, size_t size, std::string &out);
    void finish(std::string &out);

  private:
    bool pending_cr_ = false;
};

// The bytes of another reader with every lone LF turned into CRLF.
class CrlfReader : public Reader {
  public:
    explicit CrlfReader(std::unique_ptr<Reader> inner) : inner_(std::move(inner)) {}
    size_t read(char *buffer, size_t size) override;
    uint64_t size_hint() const override; // at most twice the input, when every byte is LF

  private:
    std::unique_ptr<Reader> inner_;
    CrlfConverter converter_;
    std::vector<char> input_;
    std::string converted_;
    size_t offset_ = 0;
};

// Tells whether text needs a 7-bit transfer encoding (see needs_transfer_encoding()), from
// chunks given in order.
class TransferEncodingScan {
  public:
    void update(const char *data, size_t size);
    bool needed() const;

  private:
    bool needed_ = false;
    size_t line_length_ = 0;
    bool previous_cr_ = false;
};

// Bytes written once and then read back: in memory when small is set, else in an unnamed
// temporary file, so that memory stays bounded however large they grow.
class Scratch {
  public:
    Scratch(bool small, const std::string &temp_folder);
    ~Scratch();

    // Appends bytes. Throws Error when the temporary file cannot be written.
    void write(const char *data, size_t size);

    // Returns a source over everything written so far.
    MessageSource source();

    // Appends object as GMime writes it with format. Throws Error when writing fails.
    void write_object(GMimeObject *object, GMimeFormatOptions *format);

  private:
    void flush();

    std::string memory_;
    std::unique_ptr<TempFile> file_;
    std::vector<char> buffer_;
};

// Whether the intermediate data of an operation on source stays in memory: for sources in
// memory, and for files up to this size, for which a temporary file costs more than it saves.
constexpr uint64_t small_message_size = 1024 * 1024;
inline bool is_small(const MessageSource &source) {
    return source.in_memory() || source.size() <= small_message_size;
}

// Returns folder, or the folder for temporary files when folder is empty.
std::string scratch_folder(const std::string &folder);

// Reads reader to its end and passes each chunk to sink.
void copy_all(Reader &reader, const std::function<void(const char *, size_t)> &sink);

// Reads reader to its end into a string. For readers known to be small.
std::string read_all(Reader &reader);

// Writes all bytes to bio. Throws OpensslError naming what when the write fails.
void write_bio(BIO *bio, const char *data, size_t size, const char *what);
void write_bio(BIO *bio, const std::string &text, const char *what);

// A BIO that OpenSSL reads from: every BIO_read reads from reader. An Error thrown by the
// reader is kept and the read fails; call rethrow() after the OpenSSL call that failed.
class ReaderBio {
  public:
    explicit ReaderBio(Reader &reader);
    BIO *get() const { return bio_.get(); }
    void rethrow() const;

  private:
    static int read_callback(BIO *bio, char *buffer, size_t size, size_t *read);
    static long control_callback(BIO *bio, int command, long number, void *pointer);

    Reader &reader_;
    std::exception_ptr error_;
    BioPtr bio_;
};

// A BIO that OpenSSL writes to: every BIO_write calls sink. An Error thrown by the sink is
// kept and the write fails; call rethrow() after the OpenSSL call that failed.
class SinkBio {
  public:
    explicit SinkBio(std::function<void(const char *, size_t)> sink);
    BIO *get() const { return bio_.get(); }
    void rethrow() const;

  private:
    static int write_callback(BIO *bio, const char *data, size_t size, size_t *written);
    static long control_callback(BIO *bio, int command, long number, void *pointer);

    std::function<void(const char *, size_t)> sink_;
    std::exception_ptr error_;
    BioPtr bio_;
};

// Returns a new GMime stream over the bytes of source, for parsing. A file source gets a
// stream on its own duplicate of the descriptor.
GMimeStream *new_gmime_stream(const MessageSource &source);

} // namespace p11smime
