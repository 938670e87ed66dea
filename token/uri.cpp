#include "uri.h"

#include <cstring>
#include <memory>

#include <p11-kit/uri.h>

#include "common/error.h"

namespace p11smime {
namespace {

using UriPtr = std::unique_ptr<P11KitUri, decltype(&p11_kit_uri_free)>;

struct ClassName {
    CK_OBJECT_CLASS object_class;
    const char *name;
};

// RFC 7512 section 2.3 names for the "type" attribute.
constexpr ClassName class_names[] = {
    {CKO_CERTIFICATE, "cert"},      {CKO_PRIVATE_KEY, "private"}, {CKO_PUBLIC_KEY, "public"},
    {CKO_SECRET_KEY, "secret-key"}, {CKO_DATA, "data"},
};

// CK_TOKEN_INFO fields are space-padded and not terminated; p11-kit leaves unset ones zeroed.
std::optional<std::string> padded_field(const unsigned char *field, size_t size) {
    if (field[0] == 0)
        return std::nullopt;
    std::string value(reinterpret_cast<const char *>(field), size);
    value.erase(value.find_last_not_of(' ') + 1);
    return value;
}

void set_padded_field(unsigned char *field, size_t size, const std::optional<std::string> &value) {
    if (!value)
        return;
    std::memset(field, ' ', size);
    std::memcpy(field, value->data(), std::min(size, value->size()));
}

std::optional<std::string> optional_string(const char *value) {
    return value ? std::optional<std::string>(value) : std::nullopt;
}

std::optional<std::string> class_name(CK_OBJECT_CLASS object_class) {
    for (const auto &entry : class_names)
        if (entry.object_class == object_class)
            return std::string(entry.name);
    return std::nullopt;
}

void read_attributes(P11KitUri *uri, Pkcs11Uri &result) {
    if (CK_ATTRIBUTE *label = p11_kit_uri_get_attribute(uri, CKA_LABEL))
        result.object.emplace(static_cast<char *>(label->pValue), label->ulValueLen);

    if (CK_ATTRIBUTE *id = p11_kit_uri_get_attribute(uri, CKA_ID)) {
        auto *bytes = static_cast<unsigned char *>(id->pValue);
        result.id.emplace(bytes, bytes + id->ulValueLen);
    }

    CK_ATTRIBUTE *type = p11_kit_uri_get_attribute(uri, CKA_CLASS);
    if (type && type->ulValueLen == sizeof(CK_OBJECT_CLASS))
        result.type = class_name(*static_cast<CK_OBJECT_CLASS *>(type->pValue));
}

void write_attributes(P11KitUri *uri, const Pkcs11Uri &source) {
    if (source.object) {
        CK_ATTRIBUTE label = {CKA_LABEL, const_cast<char *>(source.object->data()),
                              source.object->size()};
        p11_kit_uri_set_attribute(uri, &label);
    }
    if (source.id) {
        // An empty vector may have no storage, and p11-kit drops an attribute whose value
        // pointer is null, which would turn "id=" (an empty CKA_ID) into no id at all.
        static unsigned char no_bytes = 0;
        CK_ATTRIBUTE id = {CKA_ID,
                           source.id->empty() ? &no_bytes
                                              : const_cast<unsigned char *>(source.id->data()),
                           source.id->size()};
        p11_kit_uri_set_attribute(uri, &id);
    }
    for (const auto &entry : class_names) {
        if (source.type && *source.type == entry.name) {
            CK_OBJECT_CLASS object_class = entry.object_class;
            CK_ATTRIBUTE type = {CKA_CLASS, &object_class, sizeof object_class};
            p11_kit_uri_set_attribute(uri, &type);
        }
    }
}

} // namespace

bool is_pkcs11_uri(const std::string &text) {
    return text.rfind("pkcs11:", 0) == 0;
}

std::string without_pin_value(const std::string &text) {
    std::string result = text;
    const std::string attribute = "pin-value=";
    for (size_t at = result.find(attribute); at != std::string::npos;
         at = result.find(attribute, at + attribute.size())) {
        size_t start = at + attribute.size();
        size_t end = result.find_first_of("&;#", start);
        result.replace(start, (end == std::string::npos ? result.size() : end) - start, "***");
    }
    return result;
}

Pkcs11Uri Pkcs11Uri::parse(const std::string &text) {
    // p11-kit reads a C string, so text after a NUL would be dropped without a word.
    if (text.find('\0') != std::string::npos)
        throw Error("invalid PKCS#11 URI '" + without_pin_value(text.substr(0, text.find('\0'))) +
                        "...': it contains a NUL byte",
                    "write the URI without control characters");
    UriPtr uri(p11_kit_uri_new(), &p11_kit_uri_free);
    int status = p11_kit_uri_parse(text.c_str(), P11_KIT_URI_FOR_ANY, uri.get());
    if (status != P11_KIT_URI_OK)
        throw Error("invalid PKCS#11 URI '" + without_pin_value(text) +
                        "': " + p11_kit_uri_message(status),
                    "write it as in RFC 7512, e.g. pkcs11:token=NAME;object=LABEL;type=private");

    if (p11_kit_uri_any_unrecognized(uri.get()))
        throw Error("PKCS#11 URI '" + without_pin_value(text) +
                        "' has an attribute p11smime does not support",
                    "run 'p11smime list' and copy the URI it prints");

    Pkcs11Uri result;
    CK_TOKEN_INFO *info = p11_kit_uri_get_token_info(uri.get());
    result.token = padded_field(info->label, sizeof info->label);
    result.manufacturer = padded_field(info->manufacturerID, sizeof info->manufacturerID);
    result.serial = padded_field(info->serialNumber, sizeof info->serialNumber);
    result.model = padded_field(info->model, sizeof info->model);

    CK_SLOT_ID slot_id = p11_kit_uri_get_slot_id(uri.get());
    if (slot_id != static_cast<CK_SLOT_ID>(-1))
        result.slot_id = slot_id;
    result.module_name = optional_string(p11_kit_uri_get_module_name(uri.get()));
    result.module_path = optional_string(p11_kit_uri_get_module_path(uri.get()));

    read_attributes(uri.get(), result);
    result.pin_source = optional_string(p11_kit_uri_get_pin_source(uri.get()));
    result.pin_value = optional_string(p11_kit_uri_get_pin_value(uri.get()));
    return result;
}

std::string Pkcs11Uri::to_string() const {
    UriPtr uri(p11_kit_uri_new(), &p11_kit_uri_free);
    CK_TOKEN_INFO *info = p11_kit_uri_get_token_info(uri.get());
    set_padded_field(info->label, sizeof info->label, token);
    set_padded_field(info->manufacturerID, sizeof info->manufacturerID, manufacturer);
    set_padded_field(info->serialNumber, sizeof info->serialNumber, serial);
    set_padded_field(info->model, sizeof info->model, model);

    if (slot_id)
        p11_kit_uri_set_slot_id(uri.get(), *slot_id);
    if (module_name)
        p11_kit_uri_set_module_name(uri.get(), module_name->c_str());
    if (module_path)
        p11_kit_uri_set_module_path(uri.get(), module_path->c_str());

    write_attributes(uri.get(), *this);
    if (pin_source)
        p11_kit_uri_set_pin_source(uri.get(), pin_source->c_str());

    char *text = nullptr;
    if (p11_kit_uri_format(uri.get(), P11_KIT_URI_FOR_ANY, &text) != P11_KIT_URI_OK)
        throw Error("cannot format PKCS#11 URI");
    std::string result(text);
    free(text);
    return result;
}

} // namespace p11smime
