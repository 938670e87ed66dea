// Internal to token/: the loaded module and its slots, shared by every TokenKey taken from it.
#pragma once

#include <memory>
#include <string>

#include <libp11.h>
#include <p11-kit/pkcs11.h>

#include "token/pin.h"

namespace p11smime {

// A loaded PKCS#11 module (PKCS11_CTX) with its enumerated slots. The destructor releases the
// slots, then unloads and frees the module, in the order libp11 requires.
class Pkcs11Context {
  public:
    // Loads and initialises the module at path and enumerates its slots. Throws Error naming
    // the path when it cannot be loaded.
    explicit Pkcs11Context(const std::string &path);
    ~Pkcs11Context();
    Pkcs11Context(const Pkcs11Context &) = delete;
    Pkcs11Context &operator=(const Pkcs11Context &) = delete;

    PKCS11_CTX *ctx() const { return ctx_; }
    PKCS11_SLOT *slots() const { return slots_; }
    unsigned int slot_count() const { return slot_count_; }
    const std::string &path() const { return path_; }

    // The module's function list, for calls that libp11 does not offer; see DirectSession.
    CK_FUNCTION_LIST *functions() const { return functions_; }

    // Keeps the PIN for keys with CKA_ALWAYS_AUTHENTICATE, which libp11 asks for again
    // before each operation through the UI method that keep_pin() installs.
    void keep_pin(SecurePin &&pin);

  private:
    void find_function_list();
    void release() noexcept;

    std::string path_;
    PKCS11_CTX *ctx_ = nullptr;
    PKCS11_SLOT *slots_ = nullptr;
    unsigned int slot_count_ = 0;
    void *library_ = nullptr; // our own reference to the library that libp11 loaded
    CK_FUNCTION_LIST *functions_ = nullptr;
    bool initialised_functions_ = false; // functions_ needed a C_Initialize of its own
    UI_METHOD *ui_method_ = nullptr;
    SecurePin pin_;
};

} // namespace p11smime
