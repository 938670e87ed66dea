#include "cli/report.h"
#include "common/x509_text.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace p11smime::cli {
namespace {

using nlohmann::json;

std::string joined(const std::vector<std::string> &items) {
    std::string text;
    for (const auto &item : items)
        text += (text.empty() ? "" : ", ") + item;
    return text.empty() ? "-" : text;
}

void print_certificate(std::ostream &out, const CertificateInfo &certificate) {
    out << "    certificate: " << certificate.subject << "\n"
        << "      uri:       " << certificate.uri << "\n"
        << "      key uri:   " << certificate.key_uri << "\n"
        << "      email:     " << joined(certificate.emails) << "\n"
        << "      issuer:    " << certificate.issuer << "\n"
        << "      validity:  " << certificate.not_before << " to " << certificate.not_after
        << "\n"
        << "      key usage: " << joined(certificate.key_usage) << "\n";
}

void print_key(std::ostream &out, const KeyInfo &key) {
    out << "    " << (key.is_private ? "private key: " : "public key:  ") << key.algorithm;
    if (!key.curve.empty())
        out << " " << key.curve;
    else if (key.bits)
        out << " " << key.bits << " bits";
    out << ", label '" << key.label << "', id " << (key.id_hex.empty() ? "-" : key.id_hex)
        << "\n      uri:       " << key.uri << "\n";
}

void print_slot(std::ostream &out, const SlotInfo &slot) {
    out << "slot " << slot.slot_id << ": " << slot.description << "\n";
    if (!slot.token_present) {
        out << "  no token present\n";
        return;
    }
    out << "  token: " << slot.label << "\n"
        << "    uri:          " << slot.token_uri << "\n"
        << "    manufacturer: " << slot.token_manufacturer << "\n"
        << "    model:        " << slot.model << "\n"
        << "    serial:       " << slot.serial << "\n"
        << "    flags:        " << joined(slot.flags) << "\n";
    for (const auto &certificate : slot.certificates)
        print_certificate(out, certificate);
    for (const auto &key : slot.keys)
        print_key(out, key);
    auto has_flag = [&slot](const char *flag) {
        return std::find(slot.flags.begin(), slot.flags.end(), flag) != slot.flags.end();
    };
    if (has_flag("not-initialized"))
        out << "    (the token is not initialised, so it has no objects)\n";
    else if (!slot.logged_in && has_flag("login-required"))
        out << "    (private keys that need a login are hidden; add --login to show them)\n";
}

json certificate_json(const CertificateInfo &certificate) {
    return {{"uri", certificate.uri},           {"key_uri", certificate.key_uri},
            {"label", certificate.label},       {"id", certificate.id_hex},
            {"subject", certificate.subject},   {"issuer", certificate.issuer},
            {"emails", certificate.emails},     {"not_before", certificate.not_before},
            {"not_after", certificate.not_after}, {"key_usage", certificate.key_usage}};
}

json key_json(const KeyInfo &key) {
    json value = {{"uri", key.uri},          {"label", key.label},
                  {"id", key.id_hex},        {"class", key.is_private ? "private" : "public"},
                  {"algorithm", key.algorithm}};
    if (key.bits)
        value["bits"] = key.bits;
    if (!key.curve.empty())
        value["curve"] = key.curve;
    return value;
}

json slot_json(const SlotInfo &slot) {
    json value = {{"slot_id", slot.slot_id},
                  {"description", slot.description},
                  {"manufacturer", slot.manufacturer},
                  {"token_present", slot.token_present}};
    if (!slot.token_present)
        return value;
    json certificates = json::array();
    for (const auto &certificate : slot.certificates)
        certificates.push_back(certificate_json(certificate));
    json keys = json::array();
    for (const auto &key : slot.keys)
        keys.push_back(key_json(key));
    value["token"] = {{"uri", slot.token_uri},     {"label", slot.label},
                      {"manufacturer", slot.token_manufacturer},
                      {"model", slot.model},       {"serial", slot.serial},
                      {"flags", slot.flags},       {"logged_in", slot.logged_in},
                      {"certificates", certificates}, {"keys", keys}};
    return value;
}

json revocation_json(const RevocationReport &revocation) {
    json certificates = json::array();
    for (const auto &certificate : revocation.certificates)
        certificates.push_back({{"subject", certificate.subject},
                                {"status", status_name(certificate.status)},
                                {"source", certificate.source},
                                {"revocation_time", certificate.revocation_time},
                                {"reason", certificate.reason},
                                {"note", certificate.note},
                                {"problems", certificate.problems}});
    return {{"status", status_name(revocation.status)},
            {"online", revocation.online},
            {"note", revocation.note},
            {"certificates", certificates}};
}

json signer_json(const SignerReport &signer) {
    return {{"subject", signer.subject},
            {"emails", signer.emails},
            {"issuer", signer.issuer},
            {"serial", signer.serial},
            {"signing_time", signer.signing_time},
            {"digest", signer.digest},
            {"signature_algorithm", signer.signature_algorithm},
            {"signature_valid", signer.signature_valid},
            {"certificate_valid", signer.certificate_valid},
            {"certificate_error", signer.certificate_error},
            {"sender_matches", signer.sender_matches},
            {"validation_time", signer.validation_time},
            {"validation_time_source", signer.validation_time_source},
            {"time_failure", signer.time_failure},
            {"notes", signer.notes},
            {"date_note", signer.date_note},
            {"capabilities", signer.capabilities},
            {"algorithm_error", signer.algorithm_error},
            {"revocation", revocation_json(signer.revocation)}};
}

// One line on the revocation of a signer's path: the worst certificate, or why nothing was
// checked.
std::string revocation_text(const SignerReport &signer) {
    const RevocationReport &revocation = signer.revocation;
    if (!signer.certificate_valid)
        return "not checked (the path is not valid)";
    if (!revocation.note.empty())
        return status_name(revocation.status) + " (" + revocation.note + ")";
    for (const auto &certificate : revocation.certificates) {
        if (certificate.status != revocation.status)
            continue;
        switch (certificate.status) {
        case RevocationStatus::good:
            break;
        case RevocationStatus::revoked:
            return "revoked on " + certificate.revocation_time + " (" + certificate.reason +
                   "), says " + certificate.source;
        case RevocationStatus::unknown:
            return "unknown for " + certificate.subject;
        case RevocationStatus::not_checked:
            return revocation.online ? "not checked"
                                     : "not checked: no CRL given, and online checks are off "
                                       "(--online)";
        }
    }
    std::string sources;
    for (const auto &certificate : revocation.certificates)
        sources += (sources.empty() ? "" : "; ") + certificate.source;
    return "good (" + sources + ")";
}

} // namespace

void print_module_text(std::ostream &out, const ModuleInfo &module) {
    out << "module: " << module.path << "\n"
        << "  " << module.manufacturer << ": " << module.description << "\n";
    for (const auto &slot : module.slots)
        print_slot(out, slot);
}

void print_module_json(std::ostream &out, const ModuleInfo &module) {
    json slots = json::array();
    for (const auto &slot : module.slots)
        slots.push_back(slot_json(slot));
    json modules = json::array();
    modules.push_back({{"path", module.path},
                       {"manufacturer", module.manufacturer},
                       {"description", module.description},
                       {"slots", slots}});
    out << json{{"modules", modules}}.dump(2) << "\n";
}

void print_verify_text(std::ostream &out, const VerifyResult &result) {
    out << (result.valid ? "Signature is valid" : "Signature is NOT valid") << " ("
        << result.structure << ", part " << result.part << ")\n";
    for (const auto &signer : result.signers) {
        out << "  signer:       " << signer.subject << "\n"
            << "  email:        " << joined(signer.emails) << "\n"
            << "  issuer:       " << signer.issuer << "\n"
            << "  serial:       " << signer.serial << "\n"
            << "  signing time: " << (signer.signing_time.empty() ? "-" : signer.signing_time)
            << "\n"
            << "  digest:       " << signer.digest << "\n"
            << "  signature:    " << signer.signature_algorithm << "\n";
        if (!signer.subject.empty())
            out << "  validated at: " << signer.validation_time << " ("
                << signer.validation_time_source << ")\n"
                << "  revocation:   " << revocation_text(signer) << "\n";
    }
    for (const auto &failure : result.failures)
        out << "  failed:       " << failure << "\n";
    for (const auto &warning : result.warnings)
        out << "  warning:      " << warning << "\n";
}

namespace {

json verify_json(const VerifyResult &result) {
    json signers = json::array();
    for (const auto &signer : result.signers)
        signers.push_back(signer_json(signer));
    return {{"valid", result.valid},       {"structure", result.structure},
            {"part", result.part},         {"from", result.from},
            {"date", result.date},
            {"failures", result.failures}, {"warnings", result.warnings},
            {"signers", signers}};
}

} // namespace

void print_verify_json(std::ostream &out, const VerifyResult &result) {
    out << verify_json(result).dump(2) << "\n";
}

namespace {

json encrypt_json(const std::vector<X509Ptr> &recipients, const std::string &cipher,
                  bool rsa_oaep) {
    json list = json::array();
    for (const auto &certificate : recipients) {
        int type = EVP_PKEY_get_base_id(X509_get0_pubkey(certificate.get()));
        std::string key_management = type == EVP_PKEY_EC ? "ECDH with a SHA-256 KDF"
                                     : rsa_oaep          ? "RSAES-OAEP with SHA-256"
                                                         : "RSA PKCS#1 v1.5";
        list.push_back({{"subject", subject_oneline(certificate.get())},
                        {"key_management", key_management}});
    }
    return {{"cipher", cipher}, {"recipients", list}};
}

json decrypt_json(const DecryptResult &result) {
    json layers = json::array();
    for (const auto &layer : result.layers) {
        json value = {{"type", layer.type}};
        if (!layer.recipient.empty())
            value["recipient"] = layer.recipient;
        if (layer.has_verification)
            value["verification"] = verify_json(layer.verification);
        layers.push_back(value);
    }
    return {{"valid", result.valid}, {"failures", result.failures}, {"layers", layers}};
}

void print_line(std::ostream &out, const std::string &file, int status, const char *key,
                json report) {
    out << json{{"file", file}, {"exit_status", status}, {key, std::move(report)}}.dump()
        << "\n";
}

} // namespace

void print_encrypt_json(std::ostream &out, const std::vector<X509Ptr> &recipients,
                        const std::string &cipher, bool rsa_oaep) {
    out << encrypt_json(recipients, cipher, rsa_oaep).dump(2) << "\n";
}

void print_batch_verify_json(std::ostream &out, const std::string &file, int status,
                             const VerifyResult &result) {
    print_line(out, file, status, "verification", verify_json(result));
}

void print_batch_encrypt_json(std::ostream &out, const std::string &file,
                              const std::vector<X509Ptr> &recipients, const std::string &cipher,
                              bool rsa_oaep) {
    print_line(out, file, 0, "encryption", encrypt_json(recipients, cipher, rsa_oaep));
}

void print_batch_decrypt_json(std::ostream &out, const std::string &file, int status,
                              const DecryptResult &result) {
    print_line(out, file, status, "decryption", decrypt_json(result));
}

void print_batch_error_json(std::ostream &out, const std::string &file, const Error &error) {
    print_line(out, file, 2, "error", error.what());
}

void print_decrypt_text(std::ostream &out, const DecryptResult &result) {
    int number = 1;
    for (const auto &layer : result.layers) {
        out << "layer " << number++ << ": " << layer.type;
        if (!layer.recipient.empty())
            out << ", encrypted to " << layer.recipient;
        out << "\n";
        if (layer.has_verification)
            print_verify_text(out, layer.verification);
    }
}

void print_decrypt_json(std::ostream &out, const DecryptResult &result) {
    out << decrypt_json(result).dump(2) << "\n";
}

} // namespace p11smime::cli
