// `p11smime certs`: the certificate folder that `verify --learn` fills and `encrypt --cert-dir`
// reads.
#include <strings.h>

#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cms/cert_dir.h"
#include "common/error.h"

namespace p11smime::cli {
namespace {

using nlohmann::json;

constexpr int exit_success = 0;

std::string joined(const std::vector<std::string> &items) {
    std::string text;
    for (const auto &item : items)
        text += (text.empty() ? "" : ", ") + item;
    return text.empty() ? "-" : text;
}

// Names each SMIMECapabilities OID by the --cipher value it stands for, where there is one.
std::vector<std::string> capability_names(const std::vector<std::string> &oids) {
    std::vector<std::string> names;
    for (const auto &oid : oids) {
        std::string name = cipher_name(oid);
        names.push_back(name.empty() ? oid : name);
    }
    return names;
}

std::string preferred_cipher(const FolderCertificate &entry) {
    if (!entry.learned)
        return "-";
    for (const auto &oid : entry.learned->capabilities)
        if (!cipher_name(oid).empty())
            return cipher_name(oid);
    return "-";
}

json entry_json(const FolderCertificate &entry) {
    json value = {{"file", entry.file},
                  {"emails", entry.emails},
                  {"subject", entry.subject},
                  {"issuer", entry.issuer},
                  {"serial", entry.serial},
                  {"not_before", entry.not_before},
                  {"not_after", entry.not_after},
                  {"fingerprint_sha256", entry.fingerprint}};
    if (entry.learned)
        value["learned"] = {{"email", entry.learned->email},
                            {"capabilities", entry.learned->capabilities},
                            {"capability_names", capability_names(entry.learned->capabilities)},
                            {"signing_time", entry.learned->signing_time},
                            {"learned_at", entry.learned->learned_at}};
    return value;
}

void print_entry_text(std::ostream &out, const FolderCertificate &entry) {
    out << entry.file << "\n"
        << "  email:        " << joined(entry.emails) << "\n"
        << "  subject:      " << entry.subject << "\n"
        << "  issuer:       " << entry.issuer << "\n"
        << "  serial:       " << entry.serial << "\n"
        << "  validity:     " << entry.not_before << " to " << entry.not_after << "\n"
        << "  SHA-256:      " << entry.fingerprint << "\n";
    if (!entry.learned) {
        out << "  learned:      no (placed by hand, capabilities unknown)\n";
        return;
    }
    out << "  learned:      " << entry.learned->learned_at << " from a message signed "
        << (entry.learned->signing_time.empty() ? "at an unknown time"
                                                : entry.learned->signing_time)
        << "\n"
        << "  capabilities: " << joined(capability_names(entry.learned->capabilities)) << "\n";
}

bool matches(const FolderCertificate &entry, const std::string &email) {
    for (const auto &candidate : entry.emails)
        if (strcasecmp(candidate.c_str(), email.c_str()) == 0)
            return true;
    return false;
}

std::vector<FolderCertificate> entries_for(const CertsCommandOptions &options) {
    std::vector<FolderCertificate> all = read_certificate_folder_entries(options.cert_dir);
    if (options.action == "list")
        return all;
    std::vector<FolderCertificate> selected;
    for (auto &entry : all)
        if (matches(entry, options.email))
            selected.push_back(std::move(entry));
    if (selected.empty())
        throw Error("no certificate for '" + options.email + "' in '" + options.cert_dir + "'",
                    "run 'p11smime certs list --cert-dir " + options.cert_dir + "'");
    return selected;
}

void print_list_text(const std::vector<FolderCertificate> &entries) {
    for (const auto &entry : entries)
        std::cout << joined(entry.emails) << "  " << entry.subject << "  until "
                  << entry.not_after << "  cipher " << preferred_cipher(entry) << "  "
                  << entry.file << "\n";
}

} // namespace

int run_certs(const CertsCommandOptions &options) {
    if (options.action != "list" && options.email.empty())
        throw Error("'certs " + options.action + "' needs an email address",
                    "run 'p11smime certs " + options.action + " EMAIL --cert-dir DIR'");
    std::vector<FolderCertificate> entries = entries_for(options);
    if (options.action == "remove") {
        for (const auto &file : remove_certificates(options.cert_dir, options.email))
            std::cerr << "p11smime: removed " << file << "\n";
        return exit_success;
    }

    if (options.json) {
        json list = json::array();
        for (const auto &entry : entries)
            list.push_back(entry_json(entry));
        std::cout << json{{"certificates", list}}.dump(2) << "\n";
    } else if (options.action == "list") {
        print_list_text(entries);
    } else {
        for (const auto &entry : entries)
            print_entry_text(std::cout, entry);
    }
    return exit_success;
}

} // namespace p11smime::cli
