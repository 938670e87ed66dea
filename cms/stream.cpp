#include "cms/stream.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace p11smime {
namespace {

void write_fd(int fd, const char *data, size_t size) {
    while (size > 0) {
        ssize_t count = ::write(fd, data, size);
        if (count < 0 && errno == EINTR)
            continue;
        if (count < 0)
            throw Error(std::string("cannot write a temporary file: ") + std::strerror(errno),
                        "check the free space of the temporary folder ($TMPDIR or the output "
                        "folder)");
        data += count;
        size -= static_cast<size_t>(count);
    }
}

} // namespace

size_t SourceRangeReader::read(char *buffer, size_t size) {
    if (position_ >= end_)
        return 0;
    size = static_cast<size_t>(std::min<uint64_t>(size, end_ - position_));
    size_t count = source_.read_at(position_, buffer, size);
    if (count == 0)
        throw Error("'" + source_.name() + "' ended early; was it changed while being read?");
    position_ += count;
    if (report_)
        source_.report_progress(position_);
    return count;
}

size_t StringReader::read(char *buffer, size_t size) {
    size = std::min(size, text_.size() - position_);
    std::memcpy(buffer, text_.data() + position_, size);
    position_ += size;
    return size;
}

size_t buffer_size_for(uint64_t size_hint) {
    // One byte more than the hint, so the read that finds the end needs no second buffer.
    return size_hint >= stream_chunk_size ? stream_chunk_size : static_cast<size_t>(size_hint) + 1;
}

uint64_t ChainReader::size_hint() const {
    uint64_t total = 0;
    for (size_t i = current_; i < parts_.size(); ++i) {
        uint64_t part = parts_[i]->size_hint();
        if (part == UINT64_MAX)
            return UINT64_MAX;
        total += part;
    }
    return total;
}

size_t ChainReader::read(char *buffer, size_t size) {
    for (; current_ < parts_.size(); ++current_)
        if (size_t count = parts_[current_]->read(buffer, size))
            return count;
    return 0;
}

GMimeStreamReader::GMimeStreamReader(GMimeStream *stream) : stream_(stream) {
    g_object_ref(stream_);
}

GMimeStreamReader::~GMimeStreamReader() {
    g_object_unref(stream_);
}

size_t GMimeStreamReader::read(char *buffer, size_t size) {
    ssize_t count = g_mime_stream_read(stream_, buffer, size);
    if (count < 0)
        throw Error("cannot read the content of a MIME part");
    if (after_read_)
        after_read_();
    return static_cast<size_t>(count);
}

void CrlfConverter::convert(const char *data, size_t size, std::string &out) {
    const char *position = data;
    const char *end = data + size;
    while (position < end) {
        auto *newline = static_cast<const char *>(std::memchr(position, '\n', end - position));
        if (!newline) {
            out.append(position, end);
            previous_cr_ = end[-1] == '\r';
            return;
        }
        bool after_cr = newline > data ? newline[-1] == '\r' : previous_cr_;
        out.append(position, newline);
        out += after_cr ? "\n" : "\r\n";
        position = newline + 1;
        previous_cr_ = false;
    }
}

void LfConverter::convert(const char *data, size_t size, std::string &out) {
    if (size == 0)
        return;
    if (pending_cr_ && data[0] != '\n')
        out += '\r';
    pending_cr_ = false;

    const char *position = data;
    const char *end = data + size;
    while (position < end) {
        auto *newline = static_cast<const char *>(std::memchr(position, '\n', end - position));
        if (!newline) {
            pending_cr_ = end[-1] == '\r';
            out.append(position, pending_cr_ ? end - 1 : end);
            return;
        }
        const char *line_end = newline > position && newline[-1] == '\r' ? newline - 1 : newline;
        out.append(position, line_end);
        out += '\n';
        position = newline + 1;
    }
}

void LfConverter::finish(std::string &out) {
    if (pending_cr_)
        out += '\r';
    pending_cr_ = false;
}

uint64_t CrlfReader::size_hint() const {
    uint64_t inner = inner_->size_hint();
    return inner == UINT64_MAX ? inner : 2 * inner + (converted_.size() - offset_);
}

size_t CrlfReader::read(char *buffer, size_t size) {
    while (offset_ == converted_.size()) {
        input_.resize(buffer_size_for(inner_->size_hint()));
        size_t count = inner_->read(input_.data(), input_.size());
        if (count == 0)
            return 0;
        converted_.clear();
        offset_ = 0;
        converter_.convert(input_.data(), count, converted_);
    }
    size = std::min(size, converted_.size() - offset_);
    std::memcpy(buffer, converted_.data() + offset_, size);
    offset_ += size;
    return size;
}

namespace {

// RFC 5322 section 2.1.1: a line is at most 998 characters before its CRLF.
constexpr size_t max_line_length = 998;

// Returns true when a byte of data is a NUL or over 127, eight bytes at a time: subtracting
// one from every byte sets the top bit of a NUL byte, and a byte over 127 has it already.
bool has_nul_or_8bit(const char *data, size_t size) {
    constexpr uint64_t ones = 0x0101010101010101;
    constexpr uint64_t top_bits = 0x8080808080808080;
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t word = 0;
        std::memcpy(&word, data + i, 8);
        if (((word - ones) | word) & top_bits)
            return true;
    }
    for (; i < size; ++i) {
        auto byte = static_cast<unsigned char>(data[i]);
        if (byte == 0 || byte > 127)
            return true;
    }
    return false;
}

} // namespace

void TransferEncodingScan::update(const char *data, size_t size) {
    if (needed_ || size == 0)
        return;
    if (has_nul_or_8bit(data, size)) {
        needed_ = true;
        return;
    }
    const char *position = data;
    const char *end = data + size;
    while (position < end) {
        auto *newline = static_cast<const char *>(std::memchr(position, '\n', end - position));
        if (!newline) {
            line_length_ += end - position;
            previous_cr_ = end[-1] == '\r';
            return;
        }
        bool after_cr = newline > position ? newline[-1] == '\r' : previous_cr_;
        size_t length = line_length_ + (newline - position) - (after_cr ? 1 : 0);
        if (length > max_line_length) {
            needed_ = true;
            return;
        }
        line_length_ = 0;
        previous_cr_ = false;
        position = newline + 1;
    }
}

bool TransferEncodingScan::needed() const {
    return needed_ || line_length_ > max_line_length;
}

Scratch::Scratch(bool small, const std::string &temp_folder) {
    if (!small)
        file_ = std::make_unique<TempFile>(temp_folder);
}

Scratch::~Scratch() = default;

void Scratch::write(const char *data, size_t size) {
    if (!file_) {
        memory_.append(data, size);
        return;
    }
    if (buffer_.size() + size > stream_chunk_size)
        flush();
    if (size >= stream_chunk_size) {
        write_fd(file_->fd(), data, size);
        return;
    }
    buffer_.insert(buffer_.end(), data, data + size);
}

void Scratch::flush() {
    if (file_ && !buffer_.empty())
        write_fd(file_->fd(), buffer_.data(), buffer_.size());
    buffer_.clear();
}

MessageSource Scratch::source() {
    flush();
    if (!file_)
        return MessageSource::from_memory(memory_);
    return MessageSource::from_fd(file_->fd(), "a temporary file");
}

void Scratch::write_object(GMimeObject *object, GMimeFormatOptions *format) {
    flush();
    int fd = file_ ? dup(file_->fd()) : -1;
    if (file_ && fd < 0)
        throw Error(std::string("cannot write a temporary file: ") + std::strerror(errno));
    GMimeStream *stream = file_ ? g_mime_stream_fs_new(fd) : g_mime_stream_mem_new();
    bool written = g_mime_object_write_to_stream(object, format, stream) >= 0 &&
                   g_mime_stream_flush(stream) == 0;
    if (written && !file_) {
        GByteArray *bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(stream));
        memory_.append(reinterpret_cast<const char *>(bytes->data), bytes->len);
    }
    g_object_unref(stream);
    if (!written)
        throw Error("cannot serialise a MIME part");
}

std::string scratch_folder(const std::string &folder) {
    return folder.empty() ? temporary_folder() : folder;
}

void copy_all(Reader &reader, const std::function<void(const char *, size_t)> &sink) {
    std::vector<char> buffer(buffer_size_for(reader.size_hint()));
    while (size_t count = reader.read(buffer.data(), buffer.size()))
        sink(buffer.data(), count);
}

std::string read_all(Reader &reader) {
    std::string text;
    copy_all(reader, [&text](const char *data, size_t size) { text.append(data, size); });
    return text;
}

void write_bio(BIO *bio, const char *data, size_t size, const char *what) {
    while (size > 0) {
        size_t written = 0;
        if (BIO_write_ex(bio, data, size, &written) != 1 || written == 0)
            throw OpensslError(std::string("cannot write ") + what);
        data += written;
        size -= written;
    }
}

void write_bio(BIO *bio, const std::string &text, const char *what) {
    write_bio(bio, text.data(), text.size(), what);
}

namespace {

BIO_METHOD *make_method(const char *name, int (*read)(BIO *, char *, size_t, size_t *),
                        int (*write)(BIO *, const char *, size_t, size_t *),
                        long (*control)(BIO *, int, long, void *)) {
    BIO_METHOD *method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, name);
    if (!method)
        throw OpensslError("cannot create a BIO method");
    if (read)
        BIO_meth_set_read_ex(method, read);
    if (write)
        BIO_meth_set_write_ex(method, write);
    BIO_meth_set_ctrl(method, control);
    return method;
}

BioPtr new_bio(const BIO_METHOD *method, void *data) {
    BioPtr bio(BIO_new(method));
    if (!bio)
        throw OpensslError("cannot create a BIO");
    BIO_set_data(bio.get(), data);
    BIO_set_init(bio.get(), 1);
    return bio;
}

} // namespace

ReaderBio::ReaderBio(Reader &reader) : reader_(reader) {
    static BIO_METHOD *method =
        make_method("p11smime reader", read_callback, nullptr, control_callback);
    bio_ = new_bio(method, this);
}

int ReaderBio::read_callback(BIO *bio, char *buffer, size_t size, size_t *read) {
    auto *self = static_cast<ReaderBio *>(BIO_get_data(bio));
    try {
        *read = self->reader_.read(buffer, size);
        return *read > 0 ? 1 : 0;
    } catch (...) {
        self->error_ = std::current_exception();
        *read = 0;
        return 0;
    }
}

long ReaderBio::control_callback(BIO *, int command, long, void *) {
    return command == BIO_CTRL_FLUSH ? 1 : 0;
}

void ReaderBio::rethrow() const {
    if (error_)
        std::rethrow_exception(error_);
}

SinkBio::SinkBio(std::function<void(const char *, size_t)> sink) : sink_(std::move(sink)) {
    static BIO_METHOD *method =
        make_method("p11smime sink", nullptr, write_callback, control_callback);
    bio_ = new_bio(method, this);
}

int SinkBio::write_callback(BIO *bio, const char *data, size_t size, size_t *written) {
    auto *self = static_cast<SinkBio *>(BIO_get_data(bio));
    try {
        self->sink_(data, size);
        *written = size;
        return 1;
    } catch (...) {
        self->error_ = std::current_exception();
        *written = 0;
        return 0;
    }
}

long SinkBio::control_callback(BIO *, int command, long, void *) {
    return command == BIO_CTRL_FLUSH ? 1 : 0;
}

void SinkBio::rethrow() const {
    if (error_)
        std::rethrow_exception(error_);
}

GMimeStream *new_gmime_stream(const MessageSource &source) {
    if (source.in_memory())
        return g_mime_stream_mem_new_with_buffer(source.memory().data(), source.memory().size());
    int fd = dup(source.fd());
    if (fd < 0)
        throw Error("cannot read '" + source.name() + "'");
    // A duplicate shares the file offset, which an earlier stream may have moved.
    return g_mime_stream_fs_new_with_bounds(fd, 0, -1);
}

} // namespace p11smime
