// Internal to token/: object lookup by attribute template through the module's own function
// list. libp11 0.4.12 finds objects only by enumerating every object of a class and reading
// five or six attributes of each, which on a token with many certificates costs more than
// the signature.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <p11-kit/pkcs11.h>

#include "common/ossl.h"
#include "token/context.h"

namespace p11smime {

// A read-only session of its own on one slot of a module that libp11 has loaded and
// initialised. The token's login state is shared by every session of the process, so this
// session finds the same objects as libp11's sessions. The destructor closes the session.
class DirectSession {
  public:
    // Opens the session. Throws Pkcs11Error when C_OpenSession fails.
    DirectSession(const Pkcs11Context &context, PKCS11_SLOT *slot);
    ~DirectSession();
    DirectSession(const DirectSession &) = delete;
    DirectSession &operator=(const DirectSession &) = delete;

    // Returns the first X.509 certificate (CKO_CERTIFICATE, CKC_X_509) with the given
    // CKA_LABEL and CKA_ID, each compared only when given, or null when none matches. Throws
    // Pkcs11Error when a call fails.
    X509Ptr find_certificate(const std::optional<std::string> &label,
                             const std::optional<std::vector<unsigned char>> &id);

    // Returns true when the session's state shows the user logged in, as it does in every
    // session once any session of the process has logged in.
    bool user_logged_in() const;

    // Returns the X.509 certificates whose CKA_SUBJECT is the DER of name.
    std::vector<X509Ptr> find_certificates_by_subject(const X509_NAME *name);

  private:
    std::vector<X509Ptr> find(std::vector<CK_ATTRIBUTE> &search, CK_ULONG max_count);
    X509Ptr read_certificate(CK_OBJECT_HANDLE object);

    CK_FUNCTION_LIST *functions_;
    CK_SESSION_HANDLE session_ = CK_INVALID_HANDLE;
    std::string token_label_;
};

} // namespace p11smime
