#include "token/module.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

#include <p11-kit/p11-kit.h>

namespace p11smime {
namespace {

bool field_matches(const std::optional<std::string> &wanted, const unsigned char *field,
                   size_t size) {
    return !wanted || *wanted == unpad(field, size);
}

bool token_info_matches(const Pkcs11Uri &uri, CK_SLOT_ID slot, const CK_TOKEN_INFO &info) {
    if (!(info.flags & CKF_TOKEN_INITIALIZED))
        return false;
    if (uri.slot_id && *uri.slot_id != slot)
        return false;
    return field_matches(uri.token, info.label, sizeof info.label) &&
           field_matches(uri.manufacturer, info.manufacturerID, sizeof info.manufacturerID) &&
           field_matches(uri.serial, info.serialNumber, sizeof info.serialNumber) &&
           field_matches(uri.model, info.model, sizeof info.model);
}

} // namespace

std::string unpad(const unsigned char *field, size_t size) {
    std::string value(reinterpret_cast<const char *>(field), size);
    size_t end = value.find_last_not_of(std::string(" \0", 2));
    return end == std::string::npos ? std::string() : value.substr(0, end + 1);
}

Pkcs11Module::Pkcs11Module(const std::string &path) : path_(path) {
    // dlopen as libp11 does: p11-kit's p11_kit_module_load() rejects its own proxy module,
    // which is the default module.
    library_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!library_)
        throw Error("cannot load PKCS#11 module '" + path + "': " + dlerror(),
                    "install the module or name another with --module PATH");

    auto get_function_list =
        reinterpret_cast<CK_C_GetFunctionList>(dlsym(library_, "C_GetFunctionList"));
    CK_RV rv = get_function_list ? get_function_list(&functions_) : CKR_FUNCTION_FAILED;
    if (rv != CKR_OK || !functions_) {
        dlclose(library_);
        throw Error("'" + path + "' is not a PKCS#11 module: it has no C_GetFunctionList",
                    "name a PKCS#11 module with --module PATH");
    }

    CK_C_INITIALIZE_ARGS arguments{};
    arguments.flags = CKF_OS_LOCKING_OK;
    rv = functions_->C_Initialize(&arguments);
    if (rv != CKR_OK) {
        dlclose(library_);
        throw Pkcs11Error(rv, "C_Initialize of module '" + path + "'", "");
    }
}

Pkcs11Module::~Pkcs11Module() {
    functions_->C_Finalize(nullptr);
    dlclose(library_);
}

std::vector<CK_SLOT_ID> Pkcs11Module::slots_with_token() const {
    CK_ULONG count = 0;
    CK_RV rv = functions_->C_GetSlotList(CK_TRUE, nullptr, &count);
    std::vector<CK_SLOT_ID> slots(count);
    if (rv == CKR_OK && count > 0)
        rv = functions_->C_GetSlotList(CK_TRUE, slots.data(), &count);
    if (rv != CKR_OK)
        throw Pkcs11Error(rv, "C_GetSlotList", "");
    slots.resize(count);
    return slots;
}

CK_TOKEN_INFO Pkcs11Module::token_info(CK_SLOT_ID slot) const {
    CK_TOKEN_INFO info{};
    CK_RV rv = functions_->C_GetTokenInfo(slot, &info);
    if (rv != CKR_OK)
        throw Pkcs11Error(rv, "C_GetTokenInfo of slot " + std::to_string(slot), "");
    return info;
}

std::vector<CK_SLOT_ID> matching_token_slots(const Pkcs11Module &module, const Pkcs11Uri &uri) {
    std::vector<CK_SLOT_ID> result;
    for (CK_SLOT_ID slot : module.slots_with_token()) {
        CK_TOKEN_INFO info{};
        // A card that no driver of the module recognises reports CKR_TOKEN_NOT_RECOGNIZED.
        if (module.functions()->C_GetTokenInfo(slot, &info) != CKR_OK)
            continue;
        if (token_info_matches(uri, slot, info))
            result.push_back(slot);
    }
    return result;
}

Pkcs11Session::Pkcs11Session(const Pkcs11Module &module, CK_SLOT_ID slot, bool read_write)
    : module_(module), slot_(slot), info_(module.token_info(slot)),
      label_(unpad(info_.label, sizeof info_.label)) {
    CK_FLAGS flags = CKF_SERIAL_SESSION | (read_write ? CKF_RW_SESSION : 0);
    CK_RV rv = functions()->C_OpenSession(slot, flags, nullptr, nullptr, &handle_);
    if (rv != CKR_OK)
        throw Pkcs11Error(rv, "C_OpenSession", label_,
                          rv == CKR_TOKEN_WRITE_PROTECTED ? "the token is write-protected"
                                                          : std::string());
}

Pkcs11Session::~Pkcs11Session() {
    if (handle_ != CK_INVALID_HANDLE)
        functions()->C_CloseSession(handle_);
}

void Pkcs11Session::login(const Pkcs11Uri *uri, const TokenOptions &options) {
    if (!(info_.flags & CKF_LOGIN_REQUIRED))
        return;
    CK_SESSION_INFO session{};
    if (functions()->C_GetSessionInfo(handle_, &session) == CKR_OK &&
        (session.state == CKS_RW_USER_FUNCTIONS || session.state == CKS_RO_USER_FUNCTIONS))
        return;

    PinState state{(info_.flags & CKF_USER_PIN_LOCKED) != 0,
                   (info_.flags & CKF_USER_PIN_FINAL_TRY) != 0,
                   (info_.flags & CKF_USER_PIN_COUNT_LOW) != 0};
    check_pin_state(label_, state, uri, options);

    CK_RV rv = CKR_OK;
    if (info_.flags & CKF_PROTECTED_AUTHENTICATION_PATH) {
        if (options.warn)
            options.warn("enter the PIN for token '" + label_ + "' on the reader's PIN pad");
        rv = functions()->C_Login(handle_, CKU_USER, nullptr, 0);
    } else {
        bool interactive = false;
        SecurePin pin = obtain_login_pin(label_, uri, options, interactive);
        auto *characters = reinterpret_cast<CK_UTF8CHAR *>(const_cast<char *>(pin.c_str()));
        rv = functions()->C_Login(handle_, CKU_USER, characters, pin.size());
    }
    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
        return;
    throw Pkcs11Error(rv, "C_Login", label_,
                      rv == CKR_PIN_INCORRECT ? "check the PIN; p11smime did not retry it, so "
                                                "the token counted one failed try"
                                              : std::string());
}

std::vector<CK_OBJECT_HANDLE>
Pkcs11Session::find_objects(std::vector<CK_ATTRIBUTE> attributes) const {
    CK_RV rv = functions()->C_FindObjectsInit(handle_, attributes.data(), attributes.size());
    if (rv != CKR_OK)
        throw Pkcs11Error(rv, "C_FindObjectsInit", label_);

    std::vector<CK_OBJECT_HANDLE> objects;
    CK_OBJECT_HANDLE batch[64];
    CK_ULONG count = 0;
    while ((rv = functions()->C_FindObjects(handle_, batch, 64, &count)) == CKR_OK && count > 0)
        objects.insert(objects.end(), batch, batch + count);
    functions()->C_FindObjectsFinal(handle_);
    if (rv != CKR_OK)
        throw Pkcs11Error(rv, "C_FindObjects", label_);
    return objects;
}

std::optional<std::vector<unsigned char>> Pkcs11Session::attribute(CK_OBJECT_HANDLE object,
                                                                   CK_ATTRIBUTE_TYPE type) const {
    CK_ATTRIBUTE query{type, nullptr, 0};
    if (functions()->C_GetAttributeValue(handle_, object, &query, 1) != CKR_OK ||
        query.ulValueLen == CK_UNAVAILABLE_INFORMATION)
        return std::nullopt;

    std::vector<unsigned char> value(query.ulValueLen);
    query.pValue = value.data();
    if (functions()->C_GetAttributeValue(handle_, object, &query, 1) != CKR_OK)
        return std::nullopt;
    value.resize(query.ulValueLen);
    return value;
}

std::optional<bool> Pkcs11Session::flag(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) const {
    std::optional<std::vector<unsigned char>> value = attribute(object, type);
    if (!value || value->size() != sizeof(CK_BBOOL))
        return std::nullopt;
    return (*value)[0] != CK_FALSE;
}

namespace {

std::string owned_string(char *text) {
    std::string value = text ? text : "";
    free(text);
    return value;
}

// Reads the enable-in and disable-in options of the module's p11-kit configuration, which
// list the programs that may load it.
bool proxy_loads(CK_FUNCTION_LIST *module) {
    std::string enable_in = owned_string(p11_kit_config_option(module, "enable-in"));
    std::string disable_in = owned_string(p11_kit_config_option(module, "disable-in"));
    const std::string proxy = "p11-kit-proxy";
    if (!enable_in.empty())
        return enable_in.find(proxy) != std::string::npos;
    return disable_in.find(proxy) == std::string::npos;
}

RegisteredModule describe_registered(CK_FUNCTION_LIST *module) {
    RegisteredModule result;
    result.name = owned_string(p11_kit_module_get_name(module));
    result.path = owned_string(p11_kit_module_get_filename(module));
    result.used_by_proxy = proxy_loads(module);
    result.initialize_rv = p11_kit_module_initialize(module);
    if (result.initialize_rv != CKR_OK)
        return result;

    CK_INFO info{};
    if (module->C_GetInfo(&info) == CKR_OK)
        result.description = unpad(info.libraryDescription, sizeof info.libraryDescription);
    p11_kit_module_finalize(module);
    return result;
}

} // namespace

RegisteredModules registered_modules() {
    p11_kit_be_quiet();
    RegisteredModules result;
    CK_FUNCTION_LIST **modules = p11_kit_modules_load(nullptr, 0);
    if (const char *message = p11_kit_message(); message && *message)
        result.message = message;
    for (CK_FUNCTION_LIST **module = modules; module && *module; ++module)
        result.modules.push_back(describe_registered(*module));
    if (modules)
        p11_kit_modules_release(modules);
    return result;
}

} // namespace p11smime
