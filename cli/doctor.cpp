// `p11smime doctor`: checks, in order, each layer between the user and a working signature,
// and prints the fix for each problem it finds.
#include <ctime>
#include <iostream>

#include <openssl/x509v3.h>

#include "cli/readers.h"
#include "cli/token_commands.h"
#include "pcsc/readers.h"

namespace p11smime::cli {
namespace {

constexpr int exit_ready = 0;
constexpr int exit_blocked = 2;
constexpr int expiry_warning_days = 30;

enum class Status { ok, note, warning, problem };

struct Finding {
    Status status;
    std::string text;
    std::string fix;
};

// The findings of one check, printed under its title.
struct Check {
    explicit Check(std::string check_title) : title(std::move(check_title)) {}

    std::string title;
    std::vector<Finding> findings;

    void add(Status status, std::string text, std::string fix = {}) {
        findings.push_back({status, std::move(text), std::move(fix)});
    }
};

// What the doctor found out before judging it: the modules, the readers and the tokens.
struct Facts {
    std::string module_path;
    bool explicit_module = false;
    std::optional<RegisteredModules> registered;
    std::optional<ModuleInfo> module;
    std::string module_error, module_hint;
    std::optional<std::vector<ReaderStatus>> readers;
    std::optional<PcscError> pcsc_error;
};

// A certificate that can sign now, on its token.
struct SigningIdentity {
    const SlotInfo *slot;
    const CertificateInfo *certificate;
};

const char *status_label(Status status) {
    switch (status) {
    case Status::ok:
        return "ok";
    case Status::note:
        return "note";
    case Status::warning:
        return "warning";
    case Status::problem:
        return "problem";
    }
    return "";
}

X509Ptr parse_der(const std::vector<unsigned char> &der) {
    const unsigned char *cursor = der.data();
    return X509Ptr(d2i_X509(nullptr, &cursor, static_cast<long>(der.size())));
}

bool is_ca(X509 *certificate) { return X509_check_ca(certificate) != 0; }

// Returns the whole days from now until time, negative when it has passed.
int days_until(const ASN1_TIME *time) {
    int days = 0, seconds = 0;
    ASN1_TIME_diff(&days, &seconds, nullptr, time);
    return days;
}

bool is_yubikey(const ReaderStatus &reader) {
    std::string bytes(reader.atr.begin(), reader.atr.end());
    return bytes.find("Yubikey") != std::string::npos ||
           bytes.find("YubiKey") != std::string::npos;
}

// --- gathering ------------------------------------------------------------------------------

Facts gather(const DoctorCommandOptions &options, const TokenOptions &token,
             const std::optional<Pkcs11Uri> &filter) {
    Facts facts;
    facts.module_path = choose_module(filter ? &*filter : nullptr, token);
    facts.explicit_module = facts.module_path != proxy_module_path();
    if (!facts.explicit_module)
        facts.registered = registered_modules();
    try {
        facts.module = inspect_tokens(facts.module_path, token, filter ? &*filter : nullptr,
                                      options.login);
    } catch (const Error &error) {
        facts.module_error = error.what();
        facts.module_hint = error.hint();
    }
    try {
        facts.readers = list_readers();
    } catch (const PcscError &error) {
        facts.pcsc_error = error;
    }
    return facts;
}

bool pin_blocks(const SlotInfo &slot) {
    for (const auto &flag : slot.flags)
        if (flag == "user-pin-locked" || flag == "user-pin-not-initialized")
            return true;
    return !slot.login_error.empty();
}

bool can_sign(const SlotInfo &slot, const CertificateInfo &info) {
    X509Ptr certificate = parse_der(info.der);
    if (!certificate || is_ca(certificate.get()) || !info.key_matches || info.emails.empty())
        return false;
    return X509_cmp_current_time(X509_get0_notBefore(certificate.get())) < 0 &&
           X509_cmp_current_time(X509_get0_notAfter(certificate.get())) > 0 &&
           X509_check_purpose(certificate.get(), X509_PURPOSE_SMIME_SIGN, 0) == 1 &&
           !pin_blocks(slot);
}

std::vector<SigningIdentity> signing_identities(const Facts &facts) {
    std::vector<SigningIdentity> result;
    if (!facts.module)
        return result;
    for (const auto &slot : facts.module->slots)
        for (const auto &certificate : slot.certificates)
            if (slot.objects_listed && can_sign(slot, certificate))
                result.push_back({&slot, &certificate});
    return result;
}

// --- the checks, in the order of the layers --------------------------------------------------

Check check_modules(const Facts &facts, bool ready) {
    Check check{"PKCS#11 modules"};
    Status other = ready ? Status::warning : Status::problem;
    if (facts.registered) {
        for (const auto &module : facts.registered->modules) {
            std::string name = module.name + " (" + module.path + ")";
            if (module.initialize_rv != 0)
                check.add(other, name + " fails to initialise: " + ckr_name(module.initialize_rv),
                          "reinstall the module, or remove its p11-kit configuration file");
            else if (!module.used_by_proxy)
                check.add(Status::note, name + " loads, but p11-kit's proxy does not use it");
            else
                check.add(Status::ok, name + " loads: " + module.description);
        }
        if (!facts.registered->message.empty())
            check.add(other, "p11-kit: " + facts.registered->message,
                      "install the missing module, or remove its file from "
                      "/usr/share/p11-kit/modules or ~/.config/pkcs11/modules");
        if (facts.registered->modules.empty())
            check.add(Status::problem, "no PKCS#11 module is registered with p11-kit",
                      "install opensc-pkcs11 for smart cards, or name a module with --module");
    }
    if (!facts.module)
        check.add(Status::problem, facts.module_error,
                  facts.module_hint.empty() ? "name a module that exists with --module PATH"
                                            : facts.module_hint);
    else
        check.add(Status::ok, facts.module_path + " loads with " +
                                  std::to_string(facts.module->slots.size()) + " slot(s)");
    return check;
}

void add_reader_findings(Check &check, const std::vector<ReaderStatus> &readers, Status other) {
    bool any_card = false;
    for (const auto &reader : readers) {
        if (reader.card_present && !reader.card_mute) {
            any_card = true;
            check.add(Status::ok, "card in reader '" + reader.name + "', ATR " +
                                      atr_text(reader.atr));
        } else if (reader.card_mute) {
            check.add(other, "the card in reader '" + reader.name + "' does not answer",
                      "take the card out, clean its contacts and insert it the right way up");
        }
    }
    if (!any_card)
        check.add(other, "no card in any of " + std::to_string(readers.size()) + " reader(s)",
                  "insert the card or plug in the token, then run 'p11smime readers --wait'");
}

Check check_readers(const Facts &facts, bool ready) {
    Check check{"pcscd, readers and cards"};
    Status other = ready ? Status::note : Status::problem;
    std::string software = ready ? "; the token in use does not need it" : "";
    if (facts.pcsc_error && facts.pcsc_error->service_missing()) {
        check.add(other, "pcscd is not running" + software,
                  "start it: 'systemctl start pcscd.socket' (install the pcscd package first)");
        return check;
    }
    if (facts.pcsc_error) {
        check.add(other, facts.pcsc_error->what(), facts.pcsc_error->hint());
        return check;
    }
    check.add(Status::ok, "pcscd is running");
    if (facts.readers->empty()) {
        check.add(other, "no PC/SC reader found" + software,
                  "plug in the reader or token; USB readers need the libccid driver");
        return check;
    }
    add_reader_findings(check, *facts.readers, other);
    return check;
}

std::string unrecognised_fix(const ReaderStatus &reader, const std::string &module_path) {
    if (is_yubikey(reader))
        return "a YubiKey: use OpenSC (opensc-pkcs11) with the PIV application enabled, or "
               "ykcs11 with --module /usr/lib/x86_64-linux-gnu/libykcs11.so";
    return "no driver of " + module_path + " knows this card; install the module its "
           "maker ships, or check 'opensc-tool --list-drivers'";
}

void add_card_tokens(Check &check, const Facts &facts, Status other) {
    if (!facts.readers)
        return;
    for (const auto &reader : *facts.readers) {
        if (!reader.card_present)
            continue;
        bool recognised = false;
        for (const SlotInfo *slot : slots_for_reader(*facts.module, reader.name))
            recognised = recognised || slot->token_present;
        if (!recognised)
            check.add(other, "the card in reader '" + reader.name + "' (ATR " +
                                 atr_text(reader.atr) + ") is not recognised by " +
                                 facts.module_path,
                      unrecognised_fix(reader, facts.module_path));
    }
}

Check check_tokens(const Facts &facts, bool ready) {
    Check check{"tokens"};
    if (!facts.module)
        return check;
    Status other = ready ? Status::warning : Status::problem;
    add_card_tokens(check, facts, other);
    bool card_unrecognised = !check.findings.empty();
    int tokens = 0;
    for (const auto &slot : facts.module->slots) {
        if (!slot.token_present || !slot.objects_listed)
            continue;
        ++tokens;
        check.add(Status::ok, "token '" + slot.label + "' (" + slot.token_manufacturer + " " +
                                  slot.model + ") in slot " + std::to_string(slot.slot_id) +
                                  ": " + slot.token_uri);
    }
    if (tokens == 0 && !card_unrecognised)
        check.add(Status::problem, "no initialised token" +
                                       std::string(facts.readers ? "" : " in any slot"),
                  "insert the token; a new token needs initialising with its own tools");
    return check;
}

std::string certificate_name(const CertificateInfo &certificate) {
    return "certificate '" + certificate.label + "' (CKA_ID " + certificate.id_hex + ", " +
           certificate.subject + ")";
}

void add_key_finding(Check &check, const SlotInfo &slot, const CertificateInfo &certificate,
                   Status other) {
    std::string name = certificate_name(certificate);
    if (certificate.key_matches && certificate.has_private_key)
        check.add(Status::ok, name + " has its private key");
    else if (certificate.key_matches)
        check.add(Status::note, name + " has its public key; the private key is hidden until "
                                       "a login",
                  "run 'p11smime doctor --login' to check the private key too");
    else if (certificate.has_private_key || certificate.has_public_key)
        check.add(other, name + " does not belong to the key with its CKA_ID",
                  "store the right certificate with 'p11smime import --replace'");
    else if (!slot.logged_in && slot.login_error.empty())
        check.add(other, name + " has no key with its CKA_ID that is visible without "
                                          "a login",
                  "run 'p11smime doctor --login' to look for the private key");
    else
        check.add(other, name + " has no private key with its CKA_ID",
                  "import the certificate into the token that holds its key");
}

void add_keys_without_certificate(Check &check, const SlotInfo &slot,
                   Status other) {
    for (const auto &key : slot.keys) {
        bool certified = false;
        for (const auto &certificate : slot.certificates)
            certified = certified || certificate.id_hex == key.id_hex;
        if (key.is_private && !certified)
            check.add(other,
                      "private key '" + key.label + "' (CKA_ID " + key.id_hex +
                          ") has no certificate",
                      "request one with 'p11smime csr --key " + key.uri +
                          " --email ADDRESS' and store it with 'p11smime import'");
    }
}

Check check_certificates(const Facts &facts, bool ready) {
    Check check{"certificates and keys"};
    if (!facts.module)
        return check;
    Status other = ready ? Status::warning : Status::problem;
    for (const auto &slot : facts.module->slots) {
        if (!slot.objects_listed)
            continue;
        for (const auto &certificate : slot.certificates) {
            X509Ptr parsed = parse_der(certificate.der);
            if (parsed && !is_ca(parsed.get()))
                add_key_finding(check, slot, certificate, other);
        }
        add_keys_without_certificate(check, slot, other);
        if (slot.certificates.empty() && slot.keys.empty())
            check.add(other, "token '" + slot.label + "' shows no certificates or keys" +
                                           (slot.logged_in ? "" : " without a login"),
                      "run 'p11smime doctor --login', or generate a key with 'p11smime keygen'");
    }
    return check;
}

void add_validity_finding(Check &check, const CertificateInfo &info, X509 *certificate,
                   Status other) {
    std::string name = certificate_name(info);
    int days_left = days_until(X509_get0_notAfter(certificate));
    if (X509_cmp_current_time(X509_get0_notBefore(certificate)) >= 0)
        check.add(other, name + " is not valid before " + info.not_before,
                  "check the computer's clock, or wait until then");
    else if (X509_cmp_current_time(X509_get0_notAfter(certificate)) <= 0)
        check.add(other, name + " expired on " + info.not_after,
                  "renew it: 'p11smime csr', then 'p11smime import --replace'");
    else if (days_left < expiry_warning_days)
        check.add(other, name + " expires in " + std::to_string(days_left) +
                                       " day(s), on " + info.not_after,
                  "renew it soon: 'p11smime csr', then 'p11smime import --replace'");
    else
        check.add(Status::ok, name + " is valid until " + info.not_after);
}

void add_usage_finding(Check &check, const CertificateInfo &info, X509 *certificate,
                   Status other) {
    std::string name = certificate_name(info);
    if (X509_check_purpose(certificate, X509_PURPOSE_SMIME_SIGN, 0) != 1)
        check.add(other, name + " is not for S/MIME signing",
                  "it needs keyUsage digitalSignature or nonRepudiation, and "
                  "emailProtection in any extendedKeyUsage: request a new certificate");
    else if (info.emails.empty())
        check.add(other, name + " names no email address",
                  "request a certificate with the address as rfc822Name: 'p11smime csr "
                  "--email ADDRESS'");
    else
        check.add(Status::ok, name + " is for S/MIME signing as " + info.emails.front());
}

Check check_validity(const Facts &facts, bool ready) {
    Check check{"certificate validity and S/MIME usage"};
    if (!facts.module)
        return check;
    Status other = ready ? Status::warning : Status::problem;
    for (const auto &slot : facts.module->slots) {
        for (const auto &info : slot.certificates) {
            X509Ptr certificate = parse_der(info.der);
            if (!slot.objects_listed || !certificate || is_ca(certificate.get()))
                continue;
            add_validity_finding(check, info, certificate.get(), other);
            add_usage_finding(check, info, certificate.get(), other);
        }
    }
    return check;
}

void add_pin_findings(Check &check, const SlotInfo &slot) {
    std::string token = "token '" + slot.label + "'";
    auto has = [&slot](const char *flag) {
        return std::find(slot.flags.begin(), slot.flags.end(), flag) != slot.flags.end();
    };
    if (has("user-pin-locked"))
        check.add(Status::problem, token + ": the user PIN is locked",
                  "unblock it with the PUK or SO PIN, e.g. 'pkcs11-tool --login --login-type "
                  "so --init-pin', or 'yubico-piv-tool -a unblock-pin' for a YubiKey");
    else if (has("user-pin-not-initialized"))
        check.add(Status::problem, token + ": the user PIN is not set",
                  "set it with the SO PIN: 'pkcs11-tool --login --login-type so --init-pin'");
    else if (has("user-pin-final-try"))
        check.add(Status::warning, token + ": one PIN try left; a wrong PIN locks it",
                  "enter the PIN with care, or unblock it first with the PUK or SO PIN");
    else if (has("user-pin-count-low"))
        check.add(Status::warning, token + ": a wrong PIN was entered; few tries are left",
                  "type the PIN with care; the next correct login resets the count");
    else
        check.add(Status::ok, token + ": the PIN is not locked and no failed try is flagged");
    if (has("user-pin-to-be-changed"))
        check.add(Status::warning, token + ": the PIN must be changed before use",
                  "change it with 'pkcs11-tool --login --change-pin'");
    if (!slot.login_error.empty())
        check.add(Status::problem, token + ": login failed: " + slot.login_error,
                  "check the PIN file; p11smime tried the PIN once and did not retry it");
}

Check check_pins(const Facts &facts) {
    Check check{"PIN state"};
    if (!facts.module)
        return check;
    for (const auto &slot : facts.module->slots)
        if (slot.objects_listed)
            add_pin_findings(check, slot);
    return check;
}

// --- printing -------------------------------------------------------------------------------

void print_check(const Check &check) {
    std::cout << check.title << "\n";
    if (check.findings.empty())
        std::cout << "  [skipped] nothing to check after the problems above\n";
    for (const auto &finding : check.findings) {
        std::cout << "  [" << status_label(finding.status) << "] " << finding.text << "\n";
        if (!finding.fix.empty() && finding.status != Status::ok)
            std::cout << "      fix: " << finding.fix << "\n";
    }
}

} // namespace

CLI::App *add_doctor(CLI::App &app, DoctorCommandOptions &options) {
    CLI::App *doctor = app.add_subcommand(
        "doctor", "Check modules, pcscd, readers, tokens, certificates and the PIN, and print "
                  "the fix for each problem.\nExit status: 0 when a certificate on a token "
                  "can sign, 2 when a problem blocks signing.");
    doctor->add_option("--token", options.token,
                       "PKCS#11 URI of the token to check (default: every token)");
    doctor->add_flag("--login", options.login,
                     "log in, so private keys that need a login are checked too");
    return doctor;
}

int run_doctor(const DoctorCommandOptions &options) {
    TokenOptions token = token_options(options.common);
    std::optional<Pkcs11Uri> filter;
    if (options.token)
        filter = Pkcs11Uri::parse(*options.token);

    Facts facts = gather(options, token, filter);
    std::vector<SigningIdentity> identities = signing_identities(facts);
    bool ready = !identities.empty();
    for (const Check &check :
         {check_modules(facts, ready), check_readers(facts, ready), check_tokens(facts, ready),
          check_certificates(facts, ready), check_validity(facts, ready), check_pins(facts)})
        print_check(check);

    if (!ready) {
        std::cout << "result: signing is blocked; fix the problems above\n";
        return exit_blocked;
    }
    std::cout << "result: ready to sign with " << identities.size() << " certificate(s):\n";
    for (const auto &identity : identities)
        std::cout << "  " << identity.certificate->key_uri << " ("
                  << identity.certificate->emails.front() << ")\n";
    return exit_ready;
}

} // namespace p11smime::cli
