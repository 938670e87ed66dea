// Text forms of certificate fields, shared by the listing, verification and report code.
#pragma once

#include <string>
#include <vector>

#include <openssl/x509.h>

namespace p11smime {

// Formats a distinguished name in RFC 2253 form, such as "CN=Alice,O=Example".
std::string name_text(const X509_NAME *name);

// Formats the certificate's subject in OpenSSL's one-line form, such as "/O=Example/CN=Alice".
std::string subject_oneline(const X509 *certificate);

// Formats a time in ISO 8601, such as "2026-12-04 16:51:19Z".
std::string iso8601_text(const ASN1_TIME *time);

// Returns the certificate's serial number in uppercase hexadecimal.
std::string serial_hex(const X509 *certificate);

// Returns the certificate's email addresses: rfc822Name entries of subjectAltName and the
// subject's emailAddress attributes.
std::vector<std::string> certificate_emails(X509 *certificate);

// Returns true when email is one of the certificate's addresses, compared without regard to
// case as mail clients do.
bool certificate_has_email(X509 *certificate, const std::string &email);

} // namespace p11smime
