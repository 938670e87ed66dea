// Internal to token/: direct PKCS#11 calls, for what libp11 0.4.12 cannot do. Its
// PKCS11_generate_key makes RSA keys only and is deprecated, so key generation loads the
// module itself and calls C_GenerateKeyPair. The list of modules registered with p11-kit
// comes from p11-kit's API.
#pragma once

#include <string>
#include <vector>

#include <p11-kit/pkcs11.h>

#include "token/objects.h"

namespace p11smime {

// A loaded and initialised module (dlopen, C_GetFunctionList, C_Initialize with
// CKF_OS_LOCKING_OK). The destructor calls C_Finalize and unloads it.
class Pkcs11Module {
  public:
    // Loads the module at path and calls C_Initialize. Throws Error naming the path.
    explicit Pkcs11Module(const std::string &path);
    ~Pkcs11Module();
    Pkcs11Module(const Pkcs11Module &) = delete;
    Pkcs11Module &operator=(const Pkcs11Module &) = delete;

    CK_FUNCTION_LIST *functions() const { return functions_; }
    const std::string &path() const { return path_; }

    // Returns the IDs of the slots with a token present (C_GetSlotList).
    std::vector<CK_SLOT_ID> slots_with_token() const;

    // Returns C_GetTokenInfo of the slot. Throws Pkcs11Error.
    CK_TOKEN_INFO token_info(CK_SLOT_ID slot) const;

  private:
    std::string path_;
    void *library_ = nullptr;
    CK_FUNCTION_LIST *functions_ = nullptr;
};

// Returns a space-padded CK_TOKEN_INFO field without its padding.
std::string unpad(const unsigned char *field, size_t size);

// Returns the slots whose initialised token matches the token attributes and slot-id of uri.
std::vector<CK_SLOT_ID> matching_token_slots(const Pkcs11Module &module, const Pkcs11Uri &uri);

// A session on one slot, closed by the destructor.
class Pkcs11Session {
  public:
    // Opens a session (C_OpenSession), read-write when read_write is set. Throws Pkcs11Error.
    Pkcs11Session(const Pkcs11Module &module, CK_SLOT_ID slot, bool read_write);
    ~Pkcs11Session();
    Pkcs11Session(const Pkcs11Session &) = delete;
    Pkcs11Session &operator=(const Pkcs11Session &) = delete;

    CK_SESSION_HANDLE handle() const { return handle_; }
    CK_FUNCTION_LIST *functions() const { return module_.functions(); }
    const std::string &token_label() const { return label_; }

    // Logs in as the user when the token requires it, with the same PIN rules as the libp11
    // path: the PIN flags are read first and a rejected PIN is not retried. Throws Error or
    // Pkcs11Error.
    void login(const Pkcs11Uri *uri, const TokenOptions &options);

    // Returns the objects matching the template (C_FindObjects). Throws Pkcs11Error.
    std::vector<CK_OBJECT_HANDLE> find_objects(std::vector<CK_ATTRIBUTE> attributes) const;

    // Returns an attribute's value, or nothing when the object does not have it or it is
    // sensitive.
    std::optional<std::vector<unsigned char>> attribute(CK_OBJECT_HANDLE object,
                                                        CK_ATTRIBUTE_TYPE type) const;

    // Returns a CK_BBOOL attribute, or nothing when it cannot be read.
    std::optional<bool> flag(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) const;

  private:
    const Pkcs11Module &module_;
    CK_SLOT_ID slot_;
    CK_SESSION_HANDLE handle_ = CK_INVALID_HANDLE;
    CK_TOKEN_INFO info_{};
    std::string label_;
};

} // namespace p11smime
