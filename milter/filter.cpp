#include "milter/filter.h"

#include <strings.h>

#include <algorithm>
#include <cctype>

#include "cms/decrypt.h"
#include "cms/mime.h"
#include "cms/sign.h"
#include "cms/verify.h"

namespace p11smime::milter {
namespace {

// The three message forms that the filter distinguishes by the top-level Content-Type.
enum class Shape { plain, signed_message, encrypted };

std::string lowercase(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return text;
}

bool is_named(const HeaderField &field, const char *name) {
    return strcasecmp(field.name.c_str(), name) == 0;
}

Shape shape_of(const std::vector<HeaderField> &headers) {
    auto found = std::find_if(headers.begin(), headers.end(), [](const HeaderField &field) {
        return is_named(field, "Content-Type");
    });
    if (found == headers.end())
        return Shape::plain;
    std::string type = lowercase(found->value);
    if (type.rfind("multipart/signed", 0) == 0)
        return Shape::signed_message;
    if (type.rfind("application/pkcs7-mime", 0) != 0 &&
        type.rfind("application/x-pkcs7-mime", 0) != 0)
        return Shape::plain;
    // RFC 8551 smime-type; without one, the CMS content type decides in decrypt_message.
    return type.find("signed-data") != std::string::npos ? Shape::signed_message
                                                         : Shape::encrypted;
}

// True for a field this milter adds, arriving with the message: a sender could forge it.
bool is_forged_trace(const HeaderField &field, const std::string &authserv_id) {
    if (is_named(field, decrypted_header))
        return true;
    if (!is_named(field, "Authentication-Results"))
        return false;
    std::string value = normalise_value(field.value);
    std::string id = value.substr(0, value.find(';'));
    id.erase(0, id.find_first_not_of(" \t\n"));
    id.erase(id.find_last_not_of(" \t\n") + 1);
    return strcasecmp(id.c_str(), authserv_id.c_str()) == 0;
}

std::vector<HeaderField> without_forged_trace(std::vector<HeaderField> fields,
                                              const std::string &authserv_id) {
    fields.erase(std::remove_if(fields.begin(), fields.end(),
                                [&](const HeaderField &field) {
                                    return is_forged_trace(field, authserv_id);
                                }),
                 fields.end());
    return fields;
}

std::string from_address(const std::string &message) {
    try {
        return split_message(message).from_address;
    } catch (const Error &) {
        return {};
    }
}

VerifyOptions verify_options(const Config &config) {
    VerifyOptions options;
    options.ca_file = config.verify.ca_file;
    options.ca_path = config.verify.ca_path;
    options.system_ca = config.verify.system_ca;
    options.sender_check = config.verify.sender_check;
    return options;
}

// Returns an RFC 7281 "smime" method result for an Authentication-Results field.
std::string smime_result(const VerifyResult &result) {
    std::string text = result.valid ? "smime=pass" : "smime=fail";
    if (!result.valid && !result.failures.empty())
        text += " (" + header_comment(result.failures.front()) + ")";
    if (!result.signers.empty() && !result.signers.front().emails.empty())
        text += " body.smime-identifier=" + result.signers.front().emails.front();
    return text;
}

struct Verification {
    std::string method_result; // e.g. "smime=pass body.smime-identifier=a@example.org"
    std::string summary;       // pass, fail, none or permerror
};

// Verifies the first signature of message. A message without one gives "none".
Verification verify_signature(const std::string &message, const Config &config) {
    try {
        VerifyResult result = verify_message(message, verify_options(config));
        return {smime_result(result), result.valid ? "pass" : "fail"};
    } catch (const Error &error) {
        std::string reason = error.what();
        if (reason.find("no S/MIME signature found") != std::string::npos)
            return {"smime=none", "none"};
        return {"smime=permerror (" + header_comment(reason) + ")", "permerror"};
    }
}

FilterResult temporary_failure(const std::string &action, const std::string &detail) {
    FilterResult result;
    result.verdict = Verdict::tempfail;
    result.reply_code = "451";
    result.extended_code = "4.7.0";
    result.reply_text = "S/MIME key on the token is unavailable, try again later";
    result.action = action;
    result.result = "tempfail";
    result.detail = detail;
    return result;
}

FilterResult rewritten(const std::vector<HeaderField> &original, const std::string &message,
                       const std::vector<HeaderField> &trace, const std::string &authserv_id) {
    std::string body;
    std::vector<HeaderField> desired =
        without_forged_trace(parse_header_fields(message, body), authserv_id);
    FilterResult result;
    result.edits = compute_edits(original, desired, trace);
    result.edits.body = std::move(body);
    return result;
}

class MessageFilter {
  public:
    MessageFilter(const Runtime &runtime, KeyStore &keys, const Envelope &envelope,
                  const std::vector<HeaderField> &headers, const std::string &body)
        : runtime_(runtime), config_(runtime.config), keys_(keys), envelope_(envelope),
          headers_(headers), message_(assemble_message(headers, body)) {}

    FilterResult run();

  private:
    const SignRule *sign_rule(std::string &detail) const;
    std::vector<const DecryptRule *> decrypt_rules(std::string &detail) const;
    bool verify_applies() const;

    FilterResult sign(const SignRule &rule);
    FilterResult decrypt(const std::vector<const DecryptRule *> &rules);
    FilterResult decrypted_message(const DecryptResult &decrypted, const DecryptRule *used) const;
    FilterResult verify();
    FilterResult pass(const std::string &detail) const;

    const Runtime &runtime_;
    const Config &config_;
    KeyStore &keys_;
    const Envelope &envelope_;
    const std::vector<HeaderField> &headers_;
    std::string message_;
};

const SignRule *MessageFilter::sign_rule(std::string &detail) const {
    std::string from = from_address(message_);
    if (from.empty())
        return nullptr;
    for (const auto &rule : config_.sign_rules) {
        if (!rule.senders.matches(from))
            continue;
        if (envelope_.trusted_client)
            return &rule;
        detail = "sign rule of line " + std::to_string(rule.line) +
                 " matches From but the client is not trusted";
        return nullptr;
    }
    return nullptr;
}

// Returns the rules matching the recipients, or none unless every recipient has one, because
// one copy goes to all recipients and decrypting for some would give the others plaintext.
std::vector<const DecryptRule *> MessageFilter::decrypt_rules(std::string &detail) const {
    std::vector<const DecryptRule *> rules;
    std::vector<std::string> uncovered;
    for (const auto &recipient : envelope_.recipients) {
        bool covered = false;
        for (const auto &rule : config_.decrypt_rules) {
            if (!rule.recipients.matches(recipient))
                continue;
            covered = true;
            if (std::find(rules.begin(), rules.end(), &rule) == rules.end())
                rules.push_back(&rule);
        }
        if (!covered)
            uncovered.push_back(recipient);
    }
    if (uncovered.empty())
        return rules;
    if (!rules.empty())
        detail = "not decrypted: recipient " + uncovered.front() + " has no decrypt rule";
    return {};
}

bool MessageFilter::verify_applies() const {
    if (!config_.verify.enabled)
        return false;
    if (!config_.verify.recipients)
        return true;
    return std::any_of(envelope_.recipients.begin(), envelope_.recipients.end(),
                       [this](const std::string &recipient) {
                           return config_.verify.recipients->matches(recipient);
                       });
}

FilterResult MessageFilter::sign(const SignRule &rule) {
    std::string signed_message;
    try {
        KeyStore::Lease lease = keys_.lease();
        const OpenedKey &key = lease.key(rule.key);
        SignOptions options;
        options.key = key.key();
        options.certificate = key.certificate();
        options.chain = key.chain.get();
        options.digest = rule.digest;
        options.rsa_pss = rule.rsa_pss;
        options.opaque = rule.opaque;
        try {
            signed_message = sign_message(message_, options);
        } catch (const Error &error) {
            if (!keys_.check_key(lease, rule.key, KeyPurpose::sign))
                return temporary_failure("sign", error.what());
            FilterResult result;
            result.verdict = Verdict::reject;
            result.reply_code = "554";
            result.extended_code = "5.6.0";
            result.reply_text = "message cannot be S/MIME signed: " + header_comment(error.what());
            result.action = "sign";
            result.result = "rejected";
            result.detail = error.what();
            return result;
        }
    } catch (const TokenUnavailable &error) {
        return temporary_failure("sign", error.what());
    }

    FilterResult result = rewritten(headers_, signed_message, {}, runtime_.authserv_id);
    result.action = "sign";
    result.result = "signed";
    result.detail = "rule_line=" + std::to_string(rule.line);
    return result;
}

FilterResult MessageFilter::decrypt(const std::vector<const DecryptRule *> &rules) {
    DecryptResult decrypted;
    const DecryptRule *used = nullptr;
    try {
        KeyStore::Lease lease = keys_.lease();
        KeyLookup lookup = [&](const std::function<bool(X509 *)> &is_recipient,
                               const std::vector<std::string> &) {
            for (const DecryptRule *rule : rules) {
                const OpenedKey &key = lease.key(rule->key);
                if (key.certificate() && is_recipient(key.certificate())) {
                    used = rule;
                    return DecryptionKey{key.key(), key.certificate()};
                }
            }
            throw Error("no decrypt rule's certificate is a recipient of the message");
        };
        try {
            decrypted = decrypt_message(message_, lookup, VerifyOptions(), false);
        } catch (const TokenUnavailable &) {
            throw;
        } catch (const Error &error) {
            return pass(std::string("not decrypted: ") + error.what());
        }
        if (!decrypted.valid && used && !keys_.check_key(lease, used->key, KeyPurpose::decrypt))
            return temporary_failure("decrypt", decrypted.detail);
    } catch (const TokenUnavailable &error) {
        return temporary_failure("decrypt", error.what());
    }
    return decrypted_message(decrypted, used);
}

// Builds the result for a message that decrypt_message has processed with a working key.
FilterResult MessageFilter::decrypted_message(const DecryptResult &decrypted,
                                              const DecryptRule *used) const {
    if (!decrypted.valid) {
        FilterResult result =
            pass("decryption failed: " +
                 (decrypted.failures.empty() ? decrypted.detail : decrypted.failures.front()));
        result.action = "decrypt";
        result.result = "failed";
        return result;
    }

    Verification inner = verify_signature(decrypted.content, config_);
    const Layer *outer = decrypted.layers.empty() ? nullptr : &decrypted.layers.front();
    std::string marker = runtime_.authserv_id +
                         "; layer=" + (outer ? outer->type : "enveloped-data") + "; recipient=\"" +
                         header_comment(outer ? outer->recipient : "") +
                         "\"; signature=" + inner.summary;
    std::vector<HeaderField> trace = {{decrypted_header, marker}};
    if (inner.summary != "none")
        trace.push_back(
            {"Authentication-Results", runtime_.authserv_id + "; " + inner.method_result});

    FilterResult result = rewritten(headers_, decrypted.content, trace, runtime_.authserv_id);
    result.action = "decrypt";
    result.result = "decrypted";
    result.detail =
        "rule_line=" + std::to_string(used ? used->line : 0) + " signature=" + inner.summary;
    return result;
}

FilterResult MessageFilter::verify() {
    Verification verification = verify_signature(message_, config_);
    std::vector<HeaderField> trace = {
        {"Authentication-Results", runtime_.authserv_id + "; " + verification.method_result}};
    FilterResult result;
    result.edits =
        compute_edits(headers_, without_forged_trace(headers_, runtime_.authserv_id), trace);
    result.action = "verify";
    result.result = verification.summary;
    return result;
}

FilterResult MessageFilter::pass(const std::string &detail) const {
    FilterResult result;
    result.edits =
        compute_edits(headers_, without_forged_trace(headers_, runtime_.authserv_id), {});
    result.action = "none";
    result.result = "passed";
    result.detail = detail;
    return result;
}

FilterResult MessageFilter::run() {
    std::string detail;
    Shape shape = shape_of(headers_);
    if (shape == Shape::encrypted) {
        std::vector<const DecryptRule *> rules = decrypt_rules(detail);
        if (!rules.empty())
            return decrypt(rules);
    }
    if (const SignRule *rule = sign_rule(detail))
        return sign(*rule);
    if (shape == Shape::signed_message && verify_applies())
        return verify();
    return pass(detail);
}

} // namespace

std::string header_comment(const std::string &text) {
    std::string result;
    for (unsigned char c : text) {
        if (result.size() >= 200)
            break;
        if (c == '(' || c == ')' || c == '\\' || c == '"')
            result += '\'';
        else if (c >= ' ' && c < 0x7f)
            result += static_cast<char>(c);
        else if (c == '\n' || c == '\t')
            result += ' ';
    }
    return result;
}

FilterResult filter_message(const Runtime &runtime, KeyStore &keys, const Envelope &envelope,
                            const std::vector<HeaderField> &headers, const std::string &body) {
    MessageFilter filter(runtime, keys, envelope, headers, body);
    return filter.run();
}

} // namespace p11smime::milter
