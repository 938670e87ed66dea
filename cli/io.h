// Input and output for the command: files or standard streams, atomic writes, PIN prompts.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>

#include "cms/source.h"
#include "common/ossl.h"
#include "common/tempfile.h"
#include "token/pin.h"

namespace p11smime::cli {

// A message to process: the file at path, or standard input when path is empty or "-".
// Standard input is read into memory up to max_stdin_in_memory bytes and copied to an
// unnamed temporary file beyond that, so it can be read more than once in bounded memory.
// A file is read in pieces as it is needed, unless it is small.
class InputMessage {
  public:
    // Opens the input; a FIFO or device is read like standard input. Throws Error naming it
    // when it cannot be read or is a directory.
    explicit InputMessage(const std::optional<std::string> &path);
    InputMessage(const InputMessage &) = delete; // the source may point into memory_
    InputMessage &operator=(const InputMessage &) = delete;

    MessageSource &source() { return *source_; }

    static constexpr size_t max_stdin_in_memory = 8 * 1024 * 1024;

    // Files up to this size are read into memory whole, as most mail is.
    static constexpr uint64_t max_file_in_memory = 1024 * 1024;

  private:
    // Reads fd to its end: into memory_, or into spool_ past max_stdin_in_memory.
    void read_stream(int fd, const std::string &name);

    std::string memory_;
    std::unique_ptr<TempFile> spool_;
    std::optional<MessageSource> source_;
};

// An output written as it is produced and published by commit(). For a path, it is an
// unnamed file next to path that gets a temporary name and is renamed onto it. For standard
// output (path empty or "-"), it is an unnamed temporary file that is copied there. Without
// commit(), nothing appears. A file that is named, during commit() or where the file system has no
// unnamed files, is removed when SIGINT, SIGTERM or SIGHUP ends the process.
class OutputFile {
  public:
    // Creates the temporary file. Throws Error naming path when it cannot.
    explicit OutputFile(const std::optional<std::string> &path);
    ~OutputFile();
    OutputFile(const OutputFile &) = delete;
    OutputFile &operator=(const OutputFile &) = delete;

    // The BIO that the output is written to.
    BIO *bio() const { return bio_.get(); }

    // The folder for other temporary files that belong with this output.
    const std::string &folder() const { return folder_; }

    // Publishes the output. Throws Error when writing or renaming fails.
    void commit();

  private:
    std::optional<std::string> path_;    // none for standard output, a FIFO or a device
    std::optional<std::string> special_; // a FIFO or device, written through on commit
    mode_t mode_ = 0600;
    void create_named_temporary();
    void name_temporary();
    void discard();

    std::string temporary_;           // the named temporary file, once it has a name
    int pending_slot_ = -1;           // of temporary_, removed by SIGINT, SIGTERM or SIGHUP
    std::string folder_;
    std::unique_ptr<TempFile> spool_; // for standard output
    int fd_ = -1;
    BioPtr bio_;
    bool committed_ = false;
};

// Shows the progress of one large input on standard error, when it is a terminal and the
// input is over min_size; otherwise does nothing.
class ProgressBar {
  public:
    explicit ProgressBar(MessageSource &source);
    ~ProgressBar();
    ProgressBar(const ProgressBar &) = delete;
    ProgressBar &operator=(const ProgressBar &) = delete;

    static constexpr uint64_t min_size = 8 * 1024 * 1024;

  private:
    void show(uint64_t done, uint64_t total);

    MessageSource *source_ = nullptr;
    int last_percent_ = -1;
    bool shown_ = false;
};

// Reads a whole file, or standard input when path is empty or "-". Throws Error naming it,
// also when it is larger than max_message_size (cms/limits.h).
std::string read_input(const std::optional<std::string> &path);

// Writes data to a file atomically (a temporary file in the same folder, then rename), or to
// standard output when path is empty or "-". A failure leaves no partial file behind. A
// symbolic link is followed, an existing file keeps its mode, and a FIFO or device is
// written through, without atomicity. Like openssl and gpg, it does not call fsync, because
// that cost more than the token's signature for a small message. Durability across a power
// loss is left to the caller.
void write_output(const std::optional<std::string> &path, const std::string &data);

// Returns true when /dev/tty can be opened, so a person can be asked for a PIN.
bool terminal_available();

// Asks for the PIN of the named token on /dev/tty with echo off. Throws Error when there is
// no terminal or nothing was entered.
SecurePin prompt_pin_on_tty(const std::string &token_label);

// Throws Error naming path when its folder does not exist, so that a command fails before it
// spends a PIN try on a run whose output cannot be written.
void check_output_folder(const std::optional<std::string> &path);

} // namespace p11smime::cli
