#include "cli/commands.h"

#include <dirent.h>

#include <chrono>
#include <cstdlib>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cli/batch.h"
#include "cli/io.h"
#include "cli/report.h"
#include "cli/trust.h"
#include "cms/decrypt.h"
#include "cms/encrypt.h"
#include "cms/limits.h"
#include "cms/mime.h"
#include "cms/sign.h"
#include "cms/verify.h"
#include "common/x509_text.h"
#include "common/error.h"
#include "token/key_test.h"
#include "token/recovery.h"
#include "token/token.h"

namespace p11smime::cli {

constexpr int exit_success = 0;
constexpr int exit_check_failed = 1;

void warn(const std::string &message) { std::cerr << "p11smime: warning: " << message << "\n"; }

TokenOptions token_options(const CommonOptions &common) {
    if (common.module && common.module->empty())
        throw Error("--module is empty", "give the path of a PKCS#11 module, or leave it out");
    TokenOptions options;
    options.module = common.module;
    options.pin_file = common.pin_file;
    if (terminal_available())
        options.prompt_pin = prompt_pin_on_tty;
    options.warn = warn;
    return options;
}

X509StackPtr read_certificates(const std::string &path) {
    X509StackPtr certificates(sk_X509_new_null());
    BioPtr bio(BIO_new_file(path.c_str(), "rb"));
    if (!bio)
        throw OpensslError("cannot open certificate file '" + path + "'");
    while (X509 *certificate = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
        sk_X509_push(certificates.get(), certificate);
    clear_openssl_errors();
    if (sk_X509_num(certificates.get()) == 0) {
        BIO_reset(bio.get());
        if (X509 *certificate = d2i_X509_bio(bio.get(), nullptr))
            sk_X509_push(certificates.get(), certificate);
    }
    if (sk_X509_num(certificates.get()) == 0)
        throw OpensslError("no PEM or DER certificate in '" + path + "'");
    return certificates;
}

X509Ptr read_certificate(const std::string &path) {
    X509StackPtr certificates = read_certificates(path);
    return X509Ptr(sk_X509_shift(certificates.get()));
}

namespace {

void append_chain(STACK_OF(X509) * chain, const std::optional<std::string> &path) {
    if (!path)
        return;
    X509StackPtr extra = read_certificates(*path);
    while (X509 *certificate = sk_X509_shift(extra.get()))
        sk_X509_push(chain, certificate);
}

std::string lowercase(std::string text) {
    for (auto &c : text)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
}

bool has_certificate_extension(const std::string &name) {
    for (const char *extension : {".pem", ".crt", ".cer", ".der"}) {
        size_t length = std::char_traits<char>::length(extension);
        if (name.size() > length && name.compare(name.size() - length, length, extension) == 0)
            return true;
    }
    return false;
}

} // namespace

std::multimap<std::string, X509Ptr> read_certificate_folder(const std::string &folder) {
    std::unique_ptr<DIR, int (*)(DIR *)> directory(opendir(folder.c_str()), closedir);
    if (!directory)
        throw Error("cannot open certificate folder '" + folder + "'",
                    "check the path given to --cert-dir");
    std::multimap<std::string, X509Ptr> index;
    while (dirent *entry = readdir(directory.get())) {
        if (!has_certificate_extension(entry->d_name))
            continue;
        X509StackPtr certificates = read_certificates(folder + "/" + entry->d_name);
        while (X509 *certificate = sk_X509_shift(certificates.get())) {
            X509Ptr owned(certificate);
            for (const auto &email : certificate_emails(certificate)) {
                X509_up_ref(certificate);
                index.emplace(lowercase(email), X509Ptr(certificate));
            }
        }
    }
    return index;
}

namespace {

// Picks, for each address, the first certificate in the folder that passes the recipient
// checks; an address without one is an error naming it.
void add_folder_recipients(const std::string &folder,
                           const std::multimap<std::string, X509Ptr> &index,
                           const MessageSource &message, std::vector<X509Ptr> &recipients) {
    for (const auto &address : recipient_addresses(message)) {
        auto range = index.equal_range(lowercase(address));
        X509 *chosen = nullptr;
        std::string last_problem = "no certificate for it";
        for (auto it = range.first; it != range.second && !chosen; ++it) {
            try {
                check_recipient_certificate(it->second.get(), address);
                chosen = it->second.get();
            } catch (const Error &error) {
                last_problem = error.what();
            }
        }
        if (!chosen)
            throw Error("recipient '" + address + "' has no usable certificate in '" + folder +
                            "': " + last_problem,
                        "add the recipient's certificate to the folder, or remove the address");
        X509_up_ref(chosen);
        recipients.emplace_back(chosen);
    }
}

X509Ptr shared_copy(X509 *certificate) {
    X509_up_ref(certificate);
    return X509Ptr(certificate);
}

// The recipients of `encrypt` and `sign --encrypt-to`. The certificates named on the command
// line are read and checked once, and the --cert-dir folder is indexed once, so that a batch
// reads each certificate once. Read-only after construction, so worker threads share it.
class Recipients {
  public:
    Recipients(const EncryptionSettings &settings, const TokenOptions &token)
        : settings_(settings) {
        for (const auto &recipient : settings.recipients) {
            X509Ptr certificate =
                is_pkcs11_uri(recipient)
                    ? read_token_certificate(Pkcs11Uri::parse(recipient), token)
                    : read_certificate(recipient);
            check_recipient_certificate(certificate.get(), recipient);
            named_.push_back(std::move(certificate));
        }
        if (settings.cert_dir)
            folder_ = read_certificate_folder(*settings.cert_dir);
    }

    // Returns the named certificates, then one from the folder for each To, Cc and Bcc
    // address of message. Throws Error for an address without a usable certificate.
    std::vector<X509Ptr> for_message(const MessageSource &message) const {
        std::vector<X509Ptr> recipients;
        for (const auto &certificate : named_)
            recipients.push_back(shared_copy(certificate.get()));
        if (settings_.cert_dir)
            add_folder_recipients(*settings_.cert_dir, folder_, message, recipients);
        return recipients;
    }

  private:
    const EncryptionSettings &settings_;
    std::vector<X509Ptr> named_;
    std::multimap<std::string, X509Ptr> folder_;
};

EncryptOptions encrypt_options(const std::vector<X509Ptr> &recipients,
                               const EncryptionSettings &settings, const std::string &folder) {
    EncryptOptions encrypt;
    for (const auto &certificate : recipients)
        encrypt.recipients.push_back(certificate.get());
    encrypt.cipher = content_cipher(recipients, settings);
    encrypt.rsa_oaep = settings.rsa_oaep;
    encrypt.temp_folder = folder;
    return encrypt;
}

bool wants_encryption(const EncryptionSettings &settings) {
    return !settings.recipients.empty() || settings.cert_dir;
}

bool is_batch(const BatchSettings &batch) { return !batch.files.empty(); }

void apply_size_limit(const BatchSettings &batch) {
    if (batch.max_size_mib)
        set_max_message_size(size_t{*batch.max_size_mib} * 1024 * 1024);
}

// Checks that the batch form (FILE... with --out-dir) and the single form (--in, --out) are
// not mixed, and that a batch that writes files has somewhere to write them.
void check_batch_usage(const BatchSettings &batch, const std::optional<std::string> &in,
                       const std::optional<std::string> &out, bool out_dir_required) {
    if (!is_batch(batch)) {
        if (batch.out_dir)
            throw Error("--out-dir needs input files", "name the files after the options");
        if (batch.token_wait_seconds)
            throw Error("--token-wait is invalid without input files",
                        "leave it out, because a single message fails at once when the token "
                        "is lost");
        return;
    }
    if (in || out)
        throw Error("--in and --out cannot be combined with input files",
                    "use --out-dir DIR FILE... for many files, or --in and --out for one");
    if (out_dir_required && !batch.out_dir)
        throw Error("input files need --out-dir for their outputs",
                    "add --out-dir DIR; each output gets its input's name");
}

// Checks the files and output folder of a batch, before any login spends a PIN try on it.
std::vector<BatchFile> plan_files(const BatchSettings &batch) {
    return plan_batch(batch.files, batch.out_dir);
}

// Runs process on each planned file of the batch on worker threads; see run_batch().
int run_files(const BatchSettings &batch, const std::vector<BatchFile> &files,
              const std::function<FileOutcome(const BatchFile &)> &process) {
    ensure_gmime_initialised(); // g_mime_init() is not thread-safe
    return run_batch(files, worker_count(batch.jobs), process);
}

std::string batch_header(const std::string &file) { return file + ":\n"; }

// Returns warnings about a signature that its readers will reject: an expired or not yet
// valid certificate, or a From address that the certificate does not carry.
std::vector<std::string> signer_warnings(X509 *certificate, const std::string &from) {
    std::vector<std::string> warnings;
    if (X509_cmp_current_time(X509_get0_notAfter(certificate)) < 0)
        warnings.push_back("the signer certificate has expired, so verifiers will reject this "
                           "signature");
    else if (X509_cmp_current_time(X509_get0_notBefore(certificate)) > 0)
        warnings.push_back("the signer certificate is not valid yet, so verifiers will reject "
                           "this signature");

    if (!from.empty() && X509_check_email(certificate, from.c_str(), from.size(), 0) != 1)
        warnings.push_back("From address '" + from + "' is not in the signer certificate, so "
                           "verifiers that check the sender will reject this signature");
    return warnings;
}

// Returns how a batch recovers from a lost token: it waits up to --token-wait seconds for
// the token to come back, trying again with backoff, and logs each step as a warning.
RecoveryOptions batch_recovery(const BatchSettings &batch) {
    RecoveryOptions recovery;
    unsigned wait_seconds = batch.token_wait_seconds.value_or(default_token_wait_seconds);
    recovery.max_attempts = wait_seconds == 0 ? 0 : 1000; // the wait bounds the attempts
    recovery.first_delay = std::chrono::milliseconds(250);
    recovery.max_delay = std::chrono::seconds(5);
    recovery.max_wait = std::chrono::seconds(wait_seconds);
    recovery.log = warn;
    return recovery;
}

// Returns the recovery of a single message: none, so a lost token fails the command at once.
RecoveryOptions no_recovery() {
    RecoveryOptions recovery;
    recovery.max_attempts = 0;
    return recovery;
}

// The parts of `sign` that are set up once and shared by every file: the token key, logged
// in once, its certificate and chain, and the recipients of --encrypt-to. In a batch, a lost
// token is reopened and the file that saw the loss is signed again.
class Signer {
  public:
    Signer(const SignCommandOptions &options, RecoveryOptions recovery) : options_(options) {
        TokenOptions token = token_options(options.common);
        if (wants_encryption(options.encryption))
            recipients_.emplace(options.encryption, token);

        Pkcs11Uri key_uri = Pkcs11Uri::parse(options.key);
        std::optional<Pkcs11Uri> certificate_uri;
        X509Ptr certificate_file;
        if (options.cert && is_pkcs11_uri(*options.cert))
            certificate_uri = Pkcs11Uri::parse(*options.cert);
        else if (options.cert)
            certificate_file = read_certificate(*options.cert);

        key_.emplace(key_uri, certificate_uri, token, std::move(recovery), !certificate_file);
        certificate_ = certificate_file ? std::move(certificate_file)
                                        : shared_copy(key_->certificate());
        key_->run([&](const TokenKey &key) {
            if (X509_check_private_key(certificate_.get(), key.key()) != 1)
                throw OpensslError("the certificate does not belong to key '" +
                                       key_uri.to_string() + "'",
                                   "pass the matching certificate with --cert");
            chain_.reset(X509_chain_up_ref(key.chain()));
        });
        if (!chain_)
            chain_.reset(sk_X509_new_null());
        append_chain(chain_.get(), options.chain);
    }

    // Signs the message of input and writes it to out, and returns the warnings about the
    // signature. headers are those of input, read before the login. With show_progress, a
    // large input gets a progress bar on a terminal.
    std::vector<std::string> sign_file(InputMessage &input, const MessageHeaders &headers,
                                       const std::optional<std::string> &out,
                                       bool show_progress) {
        std::optional<ProgressBar> progress;
        if (show_progress)
            progress.emplace(input.source());
        key_->run([&](const TokenKey &key) {
            // Each attempt writes a new temporary file, and a failed one is removed unseen.
            OutputFile output(out);
            SignOptions sign = sign_options(key, output.folder());
            if (!recipients_)
                sign_stream(input.source(), output.bio(), sign);
            else
                encrypt_signed(input.source(), sign, output);
            output.commit();
        });
        return signer_warnings(certificate_.get(), headers.from_address);
    }

  private:
    SignOptions sign_options(const TokenKey &key, const std::string &folder) const {
        SignOptions sign;
        sign.key = key.key();
        sign.certificate = certificate_.get();
        sign.chain = chain_.get();
        sign.digest = options_.digest;
        sign.rsa_pss = options_.rsa_pss;
        sign.opaque = options_.opaque;
        sign.temp_folder = folder;
        return sign;
    }

    // Signs into memory, or for a large message into an unnamed temporary file, then
    // encrypts the signed message to the recipients of the original one.
    void encrypt_signed(const MessageSource &message, const SignOptions &sign,
                        OutputFile &output) const {
        bool small = message.size() <= InputMessage::max_stdin_in_memory;
        std::optional<TempFile> file;
        if (!small)
            file.emplace(output.folder());
        BioPtr signed_bio(small ? BIO_new(BIO_s_mem()) : BIO_new_fd(file->fd(), BIO_NOCLOSE));
        if (!signed_bio)
            throw OpensslError("cannot set up the signed message");
        sign_stream(message, signed_bio.get(), sign);

        char *data = nullptr;
        long length = small ? BIO_get_mem_data(signed_bio.get(), &data) : 0;
        MessageSource signed_message =
            small ? MessageSource::from_memory(std::string_view(data, static_cast<size_t>(length)))
                  : MessageSource::from_fd(file->fd(), "the signed message");
        std::vector<X509Ptr> recipients = recipients_->for_message(message);
        encrypt_stream(signed_message,
                       output.bio(),
                       encrypt_options(recipients, options_.encryption, output.folder()));
    }

    const SignCommandOptions &options_;
    std::optional<Recipients> recipients_;
    std::optional<RecoveringTokenKey> key_;
    X509Ptr certificate_;
    X509StackPtr chain_;
};

VerifyOptions verify_options(const VerifyCommandOptions &options) {
    VerifyOptions verify;
    verify.ca_file = options.ca_file;
    verify.ca_path = options.ca_path;
    verify.system_ca = !options.no_system_ca;
    verify.sender_check = !options.no_sender_check;
    verify.signer_certificate_files = options.signer_certs;
    verify.allow_sha1 = options.allow_sha1;
    add_trust_settings(options, verify);
    return verify;
}

} // namespace

int run_list(const ListOptions &options) {
    TokenOptions token = token_options(options.common);
    ModuleInfo module = list_module(choose_module(nullptr, token), token, options.login);
    if (options.json)
        print_module_json(std::cout, module);
    else
        print_module_text(std::cout, module);
    return exit_success;
}

int run_sign(const SignCommandOptions &options) {
    apply_size_limit(options.batch);
    check_batch_usage(options.batch, options.in, options.out, true);
    if (!is_batch(options.batch)) {
        InputMessage input(options.in);
        // Unusable input and a missing output folder fail before a PIN try is spent.
        MessageHeaders headers = read_headers(input.source());
        check_output_folder(options.out);
        Signer signer(options, no_recovery());
        for (const auto &warning : signer.sign_file(input, headers, options.out, true))
            warn(warning);
        return exit_success;
    }
    std::vector<BatchFile> files = plan_files(options.batch);
    Signer signer(options, batch_recovery(options.batch));
    return run_files(options.batch, files, [&signer](const BatchFile &file) {
        InputMessage input(file.input);
        MessageHeaders headers = read_headers(input.source());
        FileOutcome outcome;
        for (const auto &warning : signer.sign_file(input, headers, file.output, false))
            outcome.notices += "p11smime: warning: " + file.input + ": " + warning + "\n";
        return outcome;
    });
}

namespace {

// Verifies one file. The verified content goes to out only when every check passed.
VerifyResult verify_file(const VerifyCommandOptions &options,
                         const std::optional<std::string> &in,
                         const std::optional<std::string> &out, bool show_progress) {
    InputMessage input(in);
    check_output_folder(out);
    std::optional<ProgressBar> progress;
    if (show_progress)
        progress.emplace(input.source());
    std::optional<OutputFile> output;
    if (out)
        output.emplace(out);
    VerifyOptions verify = verify_options(options);
    if (output)
        verify.temp_folder = output->folder();
    VerifyResult result = verify_stream(input.source(), verify, output ? output->bio() : nullptr);
    progress.reset();
    if (result.valid && output)
        output->commit();
    return result;
}

// Verifies one file of a batch. The report goes to standard output, after a line naming the
// file, or as one line of JSON; a failed check makes the status 1 and writes no output.
FileOutcome verify_batch_file(const VerifyCommandOptions &options, const BatchFile &file) {
    VerifyResult result = verify_file(options, file.input, file.output, false);
    if (result.valid && options.learn_dir) {
        static std::mutex learning; // one thread at a time writes to the folder
        std::lock_guard<std::mutex> lock(learning);
        learn_signers(*options.learn_dir, result);
    }
    FileOutcome outcome;
    outcome.status = result.valid ? exit_success : exit_check_failed;
    std::ostringstream report;
    if (options.json)
        print_batch_verify_json(report, file.input, outcome.status, result);
    else
        print_verify_text(report << batch_header(file.input), result);
    outcome.report = report.str();

    for (const auto &warning : result.warnings)
        outcome.notices += "p11smime: warning: " + file.input + ": " + warning + "\n";
    if (!result.valid)
        outcome.notices += "p11smime: error: " + file.input + ": verification failed: " +
                           result.failures.front() + "\n";
    return outcome;
}

int run_verify_batch(const VerifyCommandOptions &options) {
    std::vector<BatchFile> files = plan_files(options.batch);
    return run_files(options.batch, files, [&options](const BatchFile &file) {
        try {
            return verify_batch_file(options, file);
        } catch (const Error &error) {
            if (!options.json)
                throw;
            std::ostringstream report;
            print_batch_error_json(report, file.input, error);
            return FileOutcome{2, report.str(), error_notice(file.input, error)};
        }
    });
}

} // namespace

int run_verify(const VerifyCommandOptions &options) {
    apply_size_limit(options.batch);
    check_batch_usage(options.batch, options.in, options.out, false);
    if (is_batch(options.batch))
        return run_verify_batch(options);

    VerifyResult result = verify_file(options, options.in, options.out, true);
    if (options.json)
        print_verify_json(std::cout, result);
    else
        print_verify_text(std::cout, result);
    for (const auto &warning : result.warnings)
        warn(warning);

    if (!result.valid) {
        std::cerr << "p11smime: error: verification failed: " << result.failures.front() << "\n";
        return exit_check_failed;
    }
    if (options.learn_dir)
        learn_signers(*options.learn_dir, result);
    return exit_success;
}

namespace {

void require_out_for_json(bool json, const std::optional<std::string> &out) {
    if (json && (!out || *out == "-"))
        throw Error("--json prints the report on standard output, where the message would go",
                    "add --out FILE");
}

// Encrypts one file to its recipients and returns them, for the --json report.
std::vector<X509Ptr> encrypt_file(const EncryptCommandOptions &options,
                                  const Recipients &recipients,
                                  const std::optional<std::string> &in,
                                  const std::optional<std::string> &out, bool show_progress) {
    InputMessage input(in);
    std::optional<ProgressBar> progress;
    if (show_progress)
        progress.emplace(input.source());
    std::vector<X509Ptr> certificates = recipients.for_message(input.source());
    OutputFile output(out);
    encrypt_stream(input.source(), output.bio(),
                   encrypt_options(certificates, options.encryption, output.folder()));
    output.commit();
    return certificates;
}

} // namespace

int run_encrypt(const EncryptCommandOptions &options) {
    apply_size_limit(options.batch);
    check_batch_usage(options.batch, options.in, options.out, true);
    std::vector<BatchFile> files;
    if (is_batch(options.batch)) {
        files = plan_files(options.batch);
    } else {
        require_out_for_json(options.json, options.out);
        check_output_folder(options.out);
    }
    Recipients recipients(options.encryption, token_options(options.common));

    if (!is_batch(options.batch)) {
        std::vector<X509Ptr> used =
            encrypt_file(options, recipients, options.in, options.out, true);
        if (options.json)
            print_encrypt_json(std::cout, used, content_cipher(used, options.encryption),
                               options.encryption.rsa_oaep);
        return exit_success;
    }
    return run_files(options.batch, files, [&](const BatchFile &file) {
        std::vector<X509Ptr> used =
            encrypt_file(options, recipients, file.input, file.output, false);
        FileOutcome outcome;
        if (options.json) {
            std::ostringstream report;
            print_batch_encrypt_json(report, file.input, used,
                                     content_cipher(used, options.encryption),
                                     options.encryption.rsa_oaep);
            outcome.report = report.str();
        }
        return outcome;
    });
}

namespace {

std::string joined_recipients(const std::vector<std::string> &recipients) {
    std::string text;
    for (const auto &recipient : recipients)
        text += (text.empty() ? "" : "; ") + recipient;
    return text.empty() ? "(no recipients)" : text;
}

// Opens the decryption key on first use and keeps it for the layers and files that follow.
// Every key comes from one loaded module, so a token is logged in to once. Worker threads
// share one lookup, and a mutex guards its list of keys. In a batch, a lost token is reopened
// with the keys used so far, and the file that saw the loss is decrypted again.
class TokenKeyLookup {
  public:
    TokenKeyLookup(const DecryptCommandOptions &options, RecoveryOptions recovery)
        : options_(options), token_(token_options(options.common)),
          recovery_(recovery_name(), std::move(recovery),
                    {[this](const Error &error) { return lost_reason(error); },
                     [this] { close(); },
                     [this] { reopen(); }}) {}

    // Runs operation, which decrypts with keys from this lookup; see TokenRecovery::run().
    void run(const std::function<void()> &operation) { recovery_.run(operation); }

    DecryptionKey operator()(const std::function<bool(X509 *)> &is_recipient,
                             const std::vector<std::string> &recipients) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto &key : keys_)
            if (is_recipient(key.certificate()))
                return {key.key(), key.certificate()};
        if (options_.key)
            return open_named_key(is_recipient, recipients);
        std::optional<TokenKey> key = open_recipient_key(module(nullptr), is_recipient, token_);
        if (!key)
            throw Error("no token key is a recipient of this message, which is encrypted to: " +
                            joined_recipients(recipients),
                        "insert the token that holds one of these keys, or name it with --key");
        keys_.push_back(std::move(*key));
        return {keys_.back().key(), keys_.back().certificate()};
    }

    // Throws Pkcs11Error or TokenLostError when a failed decryption came from a lost token.
    // OpenSSL clears the token's error on purpose, so a test decryption is often the only
    // sign. The checks depend only on the device, so they add no padding oracle.
    void check_tokens(const DecryptResult &result) {
        std::optional<unsigned long> rv = pkcs11_return_value(result.error_codes);
        if (!rv || !is_token_lost(*rv))
            rv = probe_keys();
        if (rv)
            throw Pkcs11Error(*rv, "decrypting with the token key", "",
                              "check the token and run the command again");
        test_keys();
    }

    // Throws Error when the failed layer of result uses RSAES-OAEP and the token of its key
    // does not offer CKM_RSA_X_509, so that the error names the mechanism, not the message.
    void check_oaep_support(const DecryptResult &result) {
        if (result.layers.empty() || !result.layers.back().rsa_oaep)
            return;

        const std::string &recipient = result.layers.back().recipient;
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto &key : keys_)
            if (subject_oneline(key.certificate()) == recipient &&
                !key.offers_raw_rsa_decryption())
                throw Error("the token of the key of " + recipient + " does not offer "
                                "CKM_RSA_X_509, which libp11 0.4.12 needs to decrypt this "
                                "RSAES-OAEP message",
                            "decrypt it on a token that offers CKM_RSA_X_509, or ask the "
                            "sender for PKCS#1 v1.5 key transport");
    }

  private:
    std::string recovery_name() const {
        if (options_.key)
            return "the token of key '" + without_pin_value(*options_.key) + "'";
        return "the token of the decryption keys in module '" + choose_module(nullptr, token_) +
               "'";
    }

    DecryptionKey open_named_key(const std::function<bool(X509 *)> &is_recipient,
                                 const std::vector<std::string> &recipients) {
        Pkcs11Uri uri = Pkcs11Uri::parse(*options_.key);
        TokenKey key = open_token_key(module(&uri), uri, std::nullopt, token_);
        if (!is_recipient(key.certificate()))
            throw Error("key '" + without_pin_value(*options_.key) + "' (" +
                            subject_oneline(key.certificate()) +
                            ") is not a recipient of this message, which is encrypted to: " +
                            joined_recipients(recipients),
                        "name the key of one of these recipients, or leave out --key");
        keys_.push_back(std::move(key));
        return {keys_.back().key(), keys_.back().certificate()};
    }

    const std::shared_ptr<Pkcs11Context> &module(const Pkcs11Uri *uri) {
        if (!module_)
            module_ = load_module(choose_module(uri, token_));
        return module_;
    }

    // Returns the CKR_ value of the first key whose token no longer responds, or nothing.
    std::optional<unsigned long> probe_keys() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto &key : keys_)
            if (unsigned long rv = key.probe(); is_token_lost(rv))
                return rv;
        return std::nullopt;
    }

    // Throws TokenLostError when a used key cannot decrypt a secret encrypted to its
    // certificate.
    void test_keys() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto &key : keys_)
            if (std::string error; !test_decryption(key.key(), key.certificate(), error))
                throw TokenLostError("the token key of " + subject_oneline(key.certificate()) +
                                         " failed a test decryption after a message failed "
                                         "to decrypt: " + error,
                                     "check the token and run the command again");
    }

    std::optional<std::string> lost_reason(const Error &error) {
        if (std::optional<std::string> reason = token_lost_reason(error))
            return reason;
        if (std::optional<unsigned long> rv = probe_keys())
            return ckr_name(*rv);
        return std::nullopt;
    }

    // Frees every key and the module, remembering the certificates of the keys in use.
    void close() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto &key : keys_) {
            X509_up_ref(key.certificate());
            used_.emplace_back(key.certificate());
        }
        keys_.clear();
        module_.reset(); // the last reference: unloads the module and frees the context
    }

    // Loads the module again and opens the keys that were in use when the token was lost.
    void reopen() {
        std::lock_guard<std::mutex> lock(mutex_);
        keys_.clear(); // the keys of an earlier attempt that failed halfway
        module_.reset();
        for (const auto &certificate : used_) {
            X509 *expected = certificate.get();
            std::optional<Pkcs11Uri> uri;
            if (options_.key)
                uri = Pkcs11Uri::parse(*options_.key);
            std::optional<TokenKey> key =
                uri ? std::optional<TokenKey>(
                          open_token_key(module(&*uri), *uri, std::nullopt, token_))
                    : open_recipient_key(
                          module(nullptr),
                          [expected](X509 *found) { return X509_cmp(found, expected) == 0; }, token_);
            if (!key)
                throw TokenNotFoundError("the key of " + subject_oneline(expected) +
                                         " was not found on any token");
            keys_.push_back(std::move(*key));
        }
        used_.clear();
    }

    const DecryptCommandOptions &options_;
    TokenOptions token_;
    std::mutex mutex_;
    std::shared_ptr<Pkcs11Context> module_;
    std::deque<TokenKey> keys_; // a deque, so a growing list never moves the keys in use
    std::vector<X509Ptr> used_; // certificates of the keys to open again after a loss
    TokenRecovery recovery_;
};

// Decrypts the message of input into output, which is not committed.
DecryptResult decrypt_into(const DecryptCommandOptions &options, TokenKeyLookup &lookup,
                           InputMessage &input, OutputFile &output) {
    VerifyOptions verify = verify_options(options.verify);
    verify.temp_folder = output.folder();
    return decrypt_stream(input.source(), std::ref(lookup), verify, !options.no_verify,
                          output.bio());
}

// Decrypts one file. The layer report goes to standard error in text, or to standard output
// as JSON; a failure writes no output.
FileOutcome decrypt_file(const DecryptCommandOptions &options, TokenKeyLookup &lookup,
                         const std::optional<std::string> &in,
                         const std::optional<std::string> &out, bool show_progress) {
    InputMessage input(in);
    check_output_folder(out);
    std::optional<ProgressBar> progress;
    if (show_progress)
        progress.emplace(input.source());
    auto output = std::make_unique<OutputFile>(out);
    DecryptResult result = decrypt_into(options, lookup, input, *output);
    if (result.decryption_failed) {
        // OpenSSL hides the token's error, so a token that failed once must not make the
        // message look altered: check the token, then decrypt once more into a new output.
        lookup.check_tokens(result);
        lookup.check_oaep_support(result);
        output.reset();
        output = std::make_unique<OutputFile>(out);
        result = decrypt_into(options, lookup, input, *output);
    }
    progress.reset();

    FileOutcome outcome;
    outcome.status = result.valid ? exit_success : exit_check_failed;
    std::ostringstream report;
    if (options.verify.json && is_batch(options.batch))
        print_batch_decrypt_json(report, *in, outcome.status, result);
    else if (options.verify.json)
        print_decrypt_json(report, result);
    else
        print_decrypt_text(report, result);
    (options.verify.json ? outcome.report : outcome.notices) = report.str();

    if (!result.valid) {
        lookup.check_tokens(result);
        if (const char *debug = std::getenv("P11SMIME_DEBUG"); debug && *debug &&
                                                               !result.detail.empty())
            outcome.notices += "p11smime: debug: " + result.detail + "\n";
        std::string prefix = is_batch(options.batch) ? *in + ": " : "";
        outcome.notices += "p11smime: error: " + prefix + result.failures.front() + "\n";
        return outcome;
    }
    output->commit();
    return outcome;
}

} // namespace

int run_decrypt(const DecryptCommandOptions &options) {
    apply_size_limit(options.batch);
    check_batch_usage(options.batch, options.verify.in, options.verify.out, true);
    std::vector<BatchFile> files;
    if (is_batch(options.batch)) {
        files = plan_files(options.batch);
    } else {
        require_out_for_json(options.verify.json, options.verify.out);
        check_output_folder(options.verify.out);
    }
    TokenKeyLookup lookup(options,
                          is_batch(options.batch) ? batch_recovery(options.batch) : no_recovery());
    if (is_batch(options.batch))
        return run_files(options.batch, files, [&](const BatchFile &file) {
            FileOutcome outcome;
            lookup.run([&] {
                outcome = decrypt_file(options, lookup, file.input, file.output, false);
            });
            if (!options.verify.json)
                outcome.notices = batch_header(file.input) + outcome.notices;
            return outcome;
        });

    FileOutcome outcome =
        decrypt_file(options, lookup, options.verify.in, options.verify.out, true);
    std::cout << outcome.report;
    std::cerr << outcome.notices;
    return outcome.status;
}

} // namespace p11smime::cli
