#include "cli/token_commands.h"

#include <cctype>
#include <iostream>

#include "cli/io.h"
#include "cms/certificate_request.h"
#include "common/error.h"
#include "token/import.h"
#include "token/keygen.h"

namespace p11smime::cli {
namespace {

constexpr int exit_success = 0;

// Parses a CKA_ID given as hexadecimal bytes, optionally separated by colons ("01", "0a:1b").
std::vector<unsigned char> parse_hex_id(const std::string &text) {
    std::string digits;
    for (char c : text)
        if (c != ':')
            digits += c;
    bool valid = !digits.empty() && digits.size() % 2 == 0;
    for (char c : digits)
        valid = valid && std::isxdigit(static_cast<unsigned char>(c));
    if (!valid)
        throw Error("invalid CKA_ID '" + text + "'",
                    "give --id as pairs of hexadecimal digits, such as 01 or 0a1b");

    std::vector<unsigned char> bytes;
    for (size_t i = 0; i < digits.size(); i += 2)
        bytes.push_back(static_cast<unsigned char>(std::stoul(digits.substr(i, 2), nullptr, 16)));
    return bytes;
}

// Parses a token URI and rejects object attributes, which would suggest that the command
// acts on one object.
Pkcs11Uri parse_token_uri(const std::string &text) {
    Pkcs11Uri uri = Pkcs11Uri::parse(text);
    if (uri.object || uri.id || uri.type)
        throw Error("--token takes a token URI, but '" + text + "' names an object",
                    "remove object=, id= and type= from the URI; p11smime list shows token URIs");
    return uri;
}

CertificateUse certificate_use(const std::string &name) {
    if (name == "sign")
        return CertificateUse::signing;
    if (name == "encrypt")
        return CertificateUse::encryption;
    return CertificateUse::both;
}

void report_import(const ImportResult &result) {
    if (result.already_present)
        std::cerr << "p11smime: the token already has this certificate; it was not stored again\n";
    if (result.replaced > 0)
        std::cerr << "p11smime: removed " << result.replaced
                  << " earlier certificate(s) with CKA_ID " << result.id_hex << "\n";
    if (result.key_uri.empty())
        warn("the certificate matches no key on the token; it was stored with CKA_ID " +
             result.id_hex + " because of --force");
    if (result.chain_stored > 0)
        std::cerr << "p11smime: stored " << result.chain_stored << " issuer certificate(s)\n";
}

} // namespace

CLI::App *add_keygen(CLI::App &app, KeygenCommandOptions &options) {
    CLI::App *keygen = app.add_subcommand(
        "keygen", "Generate a key pair on a token; the private key never leaves it");
    keygen->add_option("--token", options.token, "PKCS#11 URI of the token")->required();
    keygen->add_option("--type", options.type, "key type")
        ->required()
        ->check(CLI::IsMember(key_generation_types()));
    keygen->add_option("--label", options.label, "CKA_LABEL of the new keys")->required();
    keygen->add_option("--id", options.id,
                       "CKA_ID of the new keys in hexadecimal (default: the lowest free "
                       "one-byte ID)");
    return keygen;
}

CLI::App *add_csr(CLI::App &app, CsrCommandOptions &options) {
    CLI::App *csr = app.add_subcommand(
        "csr", "Make a PKCS#10 certificate request for an S/MIME certificate, signed on the "
               "token");
    csr->add_option("--key", options.key, "PKCS#11 URI of the private key")->required();
    csr->add_option("--email", options.email, "email address for the subjectAltName")
        ->required();
    csr->add_option("--subject", options.subject,
                    "subject as /type=value/..., e.g. '/CN=Alice Example/O=Example Ltd' "
                    "(default: /CN=EMAIL)");
    csr->add_option("--use", options.use,
                    "key usage to request: sign, encrypt or both (default: both)")
        ->check(CLI::IsMember({"sign", "encrypt", "both"}));
    csr->add_option("--out", options.out, "PEM request file (default: standard output)");
    return csr;
}

CLI::App *add_import(CLI::App &app, ImportCommandOptions &options) {
    CLI::App *import = app.add_subcommand(
        "import", "Store a certificate on the token with the CKA_ID of its key");
    import->add_option("--token", options.token, "PKCS#11 URI of the token")->required();
    import->add_option("--cert", options.cert, "certificate file, PEM or DER")->required();
    import->add_option("--chain", options.chain,
                       "PEM file of issuer certificates to store as well");
    import->add_flag("--force", options.force,
                     "store the certificate even when no key on the token matches it");
    import->add_flag("--replace", options.replace,
                     "remove the certificate the token already has for the same key");
    import->add_option("--label", options.label,
                       "CKA_LABEL of the certificate (default: the key's label)");
    import->add_option("--id", options.id,
                       "CKA_ID in hexadecimal, with --force for a certificate without a key "
                       "(default: the SHA-1 hash of its public key)");
    return import;
}

int run_keygen(const KeygenCommandOptions &options) {
    KeyGenerationRequest request;
    request.token_uri = parse_token_uri(options.token);
    request.type = options.type;
    request.label = options.label;
    if (options.id)
        request.id = parse_hex_id(*options.id);

    GeneratedKey key = generate_key_pair(request, token_options(options.common));
    std::cout << key.private_key_uri << "\n";
    return exit_success;
}

int run_csr(const CsrCommandOptions &options) {
    TokenKey key =
        open_token_key(Pkcs11Uri::parse(options.key), std::nullopt, token_options(options.common),
                       false);
    CertificateRequestOptions request;
    request.email = options.email;
    request.subject = options.subject;
    request.use = certificate_use(options.use);
    write_output(options.out, make_certificate_request(key.key(), request));
    return exit_success;
}

int run_import(const ImportCommandOptions &options) {
    X509StackPtr certificates = read_certificates(options.cert);
    X509StackPtr chain = options.chain ? read_certificates(*options.chain) : X509StackPtr();
    if (sk_X509_num(certificates.get()) > 1)
        warn("'" + options.cert + "' contains " +
             std::to_string(sk_X509_num(certificates.get())) +
             " certificates; only the first is imported, pass issuers with --chain");

    ImportRequest request;
    request.token_uri = parse_token_uri(options.token);
    request.certificate = sk_X509_value(certificates.get(), 0);
    request.chain = chain.get();
    request.force = options.force;
    request.replace = options.replace;
    request.label = options.label;
    if (options.id)
        request.id = parse_hex_id(*options.id);

    ImportResult result = import_certificate(request, token_options(options.common));
    report_import(result);
    std::cout << result.certificate_uri << "\n";
    return exit_success;
}

} // namespace p11smime::cli
