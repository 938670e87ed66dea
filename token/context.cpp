#include "token/context.h"

#include <dlfcn.h>

#include <openssl/ui.h>

#include "common/error.h"

namespace p11smime {
namespace {

// UI reader that answers libp11's context-specific login prompt with the PIN kept in the
// context, so a key with CKA_ALWAYS_AUTHENTICATE does not make the person type it again.
int answer_with_kept_pin(UI *ui, UI_STRING *request) {
    auto *pin = static_cast<const SecurePin *>(UI_get0_user_data(ui));
    switch (UI_get_string_type(request)) {
    case UIT_PROMPT:
    case UIT_VERIFY:
        if (!pin || pin->empty())
            return 0;
        return UI_set_result(ui, request, pin->c_str()) == 0 ? 1 : 0;
    default:
        return 1;
    }
}

} // namespace

Pkcs11Context::Pkcs11Context(const std::string &path) : path_(path) {
    ERR_load_PKCS11_strings();
    clear_openssl_errors();

    ctx_ = PKCS11_CTX_new();
    if (!ctx_)
        throw OpensslError("cannot create a libp11 context");

    // OpensslError keeps the CKR_ value of a failed C_Initialize or C_GetSlotList, so that a
    // recovering process can tell an absent HSM from a missing module file.
    if (PKCS11_CTX_load(ctx_, path.c_str()) != 0) {
        OpensslError error("cannot load PKCS#11 module '" + path + "'",
                           "install the module or name another with --module PATH");
        PKCS11_CTX_free(ctx_);
        throw error;
    }

    if (PKCS11_enumerate_slots(ctx_, &slots_, &slot_count_) != 0) {
        OpensslError error("cannot list the slots of PKCS#11 module '" + path + "'");
        PKCS11_CTX_unload(ctx_);
        PKCS11_CTX_free(ctx_);
        throw error;
    }
    find_function_list();
}

// Takes the function list of the library that libp11 has just loaded and initialised.
// RTLD_NOLOAD returns that same library, so no second copy with its own state is loaded.
void Pkcs11Context::find_function_list() {
    library_ = dlopen(path_.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    auto get_function_list =
        library_ ? reinterpret_cast<CK_C_GetFunctionList>(dlsym(library_, "C_GetFunctionList"))
                 : nullptr;
    if (!get_function_list || get_function_list(&functions_) != CKR_OK || !functions_) {
        release();
        throw Error("cannot find C_GetFunctionList in PKCS#11 module '" + path_ + "'");
    }

    // p11-kit's client module hands out a new, uninitialised module for each call, so the
    // list may not be the one libp11 initialised.
    CK_INFO info{};
    if (functions_->C_GetInfo(&info) != CKR_CRYPTOKI_NOT_INITIALIZED)
        return;
    CK_C_INITIALIZE_ARGS args{};
    args.flags = CKF_OS_LOCKING_OK;
    if (functions_->C_Initialize(&args) != CKR_OK) {
        release();
        throw Error("cannot initialise PKCS#11 module '" + path_ + "' for object lookup");
    }
    initialised_functions_ = true;
}

Pkcs11Context::~Pkcs11Context() { release(); }

void Pkcs11Context::release() noexcept {
    if (slots_)
        PKCS11_release_all_slots(ctx_, slots_, slot_count_);
    slots_ = nullptr;
    if (initialised_functions_)
        functions_->C_Finalize(nullptr);
    initialised_functions_ = false;
    PKCS11_CTX_unload(ctx_);
    PKCS11_CTX_free(ctx_);
    ctx_ = nullptr;
    if (library_)
        dlclose(library_);
    library_ = nullptr;
    if (ui_method_)
        UI_destroy_method(ui_method_);
    ui_method_ = nullptr;
}

void Pkcs11Context::keep_pin(SecurePin &&pin) {
    pin_ = std::move(pin);
    if (!ui_method_) {
        ui_method_ = UI_create_method("p11smime kept PIN");
        if (!ui_method_)
            throw OpensslError("cannot create the PIN callback");
        UI_method_set_reader(ui_method_, answer_with_kept_pin);
    }
    if (PKCS11_set_ui_method(ctx_, ui_method_, &pin_) != 0)
        throw OpensslError("cannot install the PIN callback");
}

} // namespace p11smime
