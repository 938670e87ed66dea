#include "token/keygen.h"

#include <set>

#include <openssl/objects.h>

#include "token/module.h"

namespace p11smime {
namespace {

struct KeyType {
    const char *name;
    CK_KEY_TYPE key_type;
    CK_ULONG modulus_bits; // RSA
    int curve_nid;         // EC
};

constexpr KeyType key_types[] = {
    {"rsa:2048", CKK_RSA, 2048, NID_undef},
    {"rsa:3072", CKK_RSA, 3072, NID_undef},
    {"rsa:4096", CKK_RSA, 4096, NID_undef},
    {"ec:p256", CKK_EC, 0, NID_X9_62_prime256v1},
    {"ec:p384", CKK_EC, 0, NID_secp384r1},
};

const KeyType &find_key_type(const std::string &name) {
    for (const auto &type : key_types)
        if (name == type.name)
            return type;
    throw Error("unknown key type '" + name + "'",
                "use rsa:2048, rsa:3072, rsa:4096, ec:p256 or ec:p384");
}

// Returns CKA_EC_PARAMS for the curve: the DER encoding of its OID (namedCurve).
std::vector<unsigned char> curve_parameters(int nid) {
    const ASN1_OBJECT *oid = OBJ_nid2obj(nid);
    int length = i2d_ASN1_OBJECT(oid, nullptr);
    if (length <= 0)
        throw OpensslError("cannot encode the curve OID");
    std::vector<unsigned char> der(static_cast<size_t>(length));
    unsigned char *cursor = der.data();
    i2d_ASN1_OBJECT(oid, &cursor);
    return der;
}

CK_SLOT_ID find_token_slot(const Pkcs11Module &module, const Pkcs11Uri &uri) {
    std::vector<CK_SLOT_ID> slots = matching_token_slots(module, uri);
    if (slots.empty())
        throw Error("no initialised token matching '" + uri.to_string() + "' in module '" +
                        module.path() + "'",
                    "insert the token, or run 'p11smime list' to see the tokens present");
    if (slots.size() > 1)
        throw Error("token URI '" + uri.to_string() + "' matches " +
                        std::to_string(slots.size()) + " tokens",
                    "add token= or serial= to the URI so it names one token");
    return slots.front();
}

std::set<std::vector<unsigned char>> used_ids(const Pkcs11Session &session) {
    std::set<std::vector<unsigned char>> ids;
    for (CK_OBJECT_HANDLE object : session.find_objects({}))
        if (auto id = session.attribute(object, CKA_ID))
            ids.insert(*id);
    return ids;
}

// Picks the lowest one-byte CKA_ID that no object on the token has. PIV cards map IDs 01 to
// 04 to their key slots, so the low IDs are also the ones those cards accept.
std::vector<unsigned char> free_id(const Pkcs11Session &session) {
    std::set<std::vector<unsigned char>> ids = used_ids(session);
    for (unsigned int byte = 1; byte <= 0xff; ++byte) {
        std::vector<unsigned char> id{static_cast<unsigned char>(byte)};
        if (!ids.count(id))
            return id;
    }
    throw Error("every one-byte CKA_ID is taken on token '" + session.token_label() + "'",
                "choose one with --id HEX");
}

void check_unused(const Pkcs11Session &session, const std::string &label,
                  const std::vector<unsigned char> &id) {
    CK_OBJECT_CLASS private_key = CKO_PRIVATE_KEY;
    std::vector<CK_ATTRIBUTE> by_label{
        {CKA_CLASS, &private_key, sizeof private_key},
        {CKA_LABEL, const_cast<char *>(label.data()), label.size()},
    };
    if (!session.find_objects(by_label).empty())
        throw Error("token '" + session.token_label() + "' already has a private key labelled '" +
                        label + "'",
                    "choose another --label");

    std::vector<CK_ATTRIBUTE> by_id{
        {CKA_ID, const_cast<unsigned char *>(id.data()), id.size()},
    };
    if (!session.find_objects(by_id).empty())
        throw Error("token '" + session.token_label() + "' already has objects with CKA_ID " +
                        hex_id(id.data(), id.size()),
                    "choose another --id, or leave it out to take a free one");
}

struct KeyPair {
    CK_OBJECT_HANDLE public_key = CK_INVALID_HANDLE;
    CK_OBJECT_HANDLE private_key = CK_INVALID_HANDLE;
};

KeyPair generate(const Pkcs11Session &session, const KeyType &type, const std::string &label,
                 const std::vector<unsigned char> &id) {
    CK_BBOOL yes = CK_TRUE;
    CK_BBOOL no = CK_FALSE;
    CK_OBJECT_CLASS public_class = CKO_PUBLIC_KEY;
    CK_OBJECT_CLASS private_class = CKO_PRIVATE_KEY;
    CK_KEY_TYPE key_type = type.key_type;
    CK_ULONG bits = type.modulus_bits;
    unsigned char exponent[] = {0x01, 0x00, 0x01}; // 65537
    std::vector<unsigned char> curve;
    auto *label_bytes = const_cast<char *>(label.data());
    auto *id_bytes = const_cast<unsigned char *>(id.data());

    std::vector<CK_ATTRIBUTE> public_template{
        {CKA_CLASS, &public_class, sizeof public_class},
        {CKA_KEY_TYPE, &key_type, sizeof key_type},
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &no, sizeof no},
        {CKA_VERIFY, &yes, sizeof yes},
        {CKA_LABEL, label_bytes, label.size()},
        {CKA_ID, id_bytes, id.size()},
    };
    // Decrypt for RSA key transport and derive for ECDH key agreement, so the key can also
    // read S/MIME mail encrypted to its certificate.
    std::vector<CK_ATTRIBUTE> private_template{
        {CKA_CLASS, &private_class, sizeof private_class},
        {CKA_KEY_TYPE, &key_type, sizeof key_type},
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no},
        {CKA_SIGN, &yes, sizeof yes},
        {type.key_type == CKK_RSA ? CKA_DECRYPT : CKA_DERIVE, &yes, sizeof yes},
        {CKA_LABEL, label_bytes, label.size()},
        {CKA_ID, id_bytes, id.size()},
    };

    CK_MECHANISM mechanism{CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
    if (type.key_type == CKK_RSA) {
        public_template.push_back({CKA_MODULUS_BITS, &bits, sizeof bits});
        public_template.push_back({CKA_PUBLIC_EXPONENT, exponent, sizeof exponent});
        public_template.push_back({CKA_ENCRYPT, &yes, sizeof yes});
    } else {
        mechanism.mechanism = CKM_EC_KEY_PAIR_GEN;
        curve = curve_parameters(type.curve_nid);
        public_template.push_back({CKA_EC_PARAMS, curve.data(), curve.size()});
    }

    KeyPair pair;
    CK_RV rv = session.functions()->C_GenerateKeyPair(
        session.handle(), &mechanism, public_template.data(), public_template.size(),
        private_template.data(), private_template.size(), &pair.public_key, &pair.private_key);
    if (rv != CKR_OK)
        throw Pkcs11Error(rv, "C_GenerateKeyPair (" + std::string(type.name) + ")",
                          session.token_label(),
                          rv == CKR_MECHANISM_INVALID || rv == CKR_KEY_SIZE_RANGE ||
                                  rv == CKR_DOMAIN_PARAMS_INVALID
                              ? "the token does not generate this key type; try another --type"
                              : std::string());
    return pair;
}

// Makes sure that the token kept the private key inside: some tokens ignore parts of the
// template instead of failing.
void check_private_key_stays(const Pkcs11Session &session, const KeyPair &pair) {
    std::optional<bool> sensitive = session.flag(pair.private_key, CKA_SENSITIVE);
    std::optional<bool> extractable = session.flag(pair.private_key, CKA_EXTRACTABLE);
    if (sensitive == true && extractable == false)
        return;
    session.functions()->C_DestroyObject(session.handle(), pair.private_key);
    session.functions()->C_DestroyObject(session.handle(), pair.public_key);
    throw Error("token '" + session.token_label() +
                    "' made a private key that is not sensitive or is extractable; it was "
                    "destroyed again",
                "use a token that keeps generated keys inside it");
}

std::string object_uri(const CK_TOKEN_INFO &info, const std::string &label,
                       const std::vector<unsigned char> &id, const char *type) {
    Pkcs11Uri uri;
    uri.token = unpad(info.label, sizeof info.label);
    uri.serial = unpad(info.serialNumber, sizeof info.serialNumber);
    uri.object = label;
    uri.id = id;
    uri.type = type;
    return uri.to_string();
}

} // namespace

const std::vector<std::string> &key_generation_types() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> result;
        for (const auto &type : key_types)
            result.emplace_back(type.name);
        return result;
    }();
    return names;
}

GeneratedKey generate_key_pair(const KeyGenerationRequest &request, const TokenOptions &options) {
    const KeyType &type = find_key_type(request.type);
    if (request.label.empty())
        throw Error("the key label is empty", "name the key with --label");
    if (request.id && request.id->empty())
        throw Error("the CKA_ID is empty", "give --id as hexadecimal bytes, such as 01");

    Pkcs11Module module(choose_module(&request.token_uri, options));
    CK_SLOT_ID slot = find_token_slot(module, request.token_uri);
    CK_TOKEN_INFO info = module.token_info(slot);
    if (info.flags & CKF_WRITE_PROTECTED)
        throw Error("token '" + unpad(info.label, sizeof info.label) + "' is write-protected");

    Pkcs11Session session(module, slot, true);
    session.login(&request.token_uri, options);

    std::vector<unsigned char> id = request.id ? *request.id : free_id(session);
    check_unused(session, request.label, id);
    KeyPair pair = generate(session, type, request.label, id);
    check_private_key_stays(session, pair);

    GeneratedKey result;
    result.private_key_uri = object_uri(info, request.label, id, "private");
    result.public_key_uri = object_uri(info, request.label, id, "public");
    result.token_label = session.token_label();
    result.id_hex = hex_id(id.data(), id.size());
    return result;
}

} // namespace p11smime
