// sign-throughput: raw C_Sign throughput of one token key, called directly through the
// module's function list, as the baseline for p11smime's batch signing.
//
// Usage: sign-throughput MODULE TOKEN_LABEL KEY_LABEL PIN_FILE COUNT THREADS
//
// Loads MODULE, logs in to the token labelled TOKEN_LABEL with the PIN in the first line of
// PIN_FILE, finds the private key labelled KEY_LABEL, and makes COUNT signatures spread over
// THREADS threads, each with its own session. An RSA key signs a SHA-256 DigestInfo with
// CKM_RSA_PKCS and an EC key a SHA-256 hash with CKM_ECDSA, as a CMS signature through libp11
// does. Prints one line: "signatures COUNT threads THREADS seconds S per_second R", plus the
// milliseconds that C_Initialize and C_Login took.
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <p11-kit/pkcs11.h>

namespace {

using Clock = std::chrono::steady_clock;

// DER prefix of a SHA-256 DigestInfo (RFC 8017 section 9.2, note 1).
constexpr unsigned char sha256_prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                           0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                           0x01, 0x05, 0x00, 0x04, 0x20};

void check(CK_RV rv, const char *operation) {
    if (rv != CKR_OK)
        throw std::runtime_error(std::string(operation) + " failed: CKR 0x" + std::to_string(rv));
}

double milliseconds_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

CK_FUNCTION_LIST *load_module(const std::string &path) {
    void *library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!library)
        throw std::runtime_error("cannot load " + path + ": " + dlerror());
    auto get_function_list =
        reinterpret_cast<CK_C_GetFunctionList>(dlsym(library, "C_GetFunctionList"));
    if (!get_function_list)
        throw std::runtime_error(path + " has no C_GetFunctionList");
    CK_FUNCTION_LIST *functions = nullptr;
    check(get_function_list(&functions), "C_GetFunctionList");
    return functions;
}

std::string padded(const std::string &text, size_t size) {
    std::string result = text;
    result.resize(size, ' ');
    return result;
}

CK_SLOT_ID find_slot(CK_FUNCTION_LIST *p11, const std::string &token_label) {
    CK_ULONG count = 0;
    check(p11->C_GetSlotList(CK_TRUE, nullptr, &count), "C_GetSlotList");
    std::vector<CK_SLOT_ID> slots(count);
    check(p11->C_GetSlotList(CK_TRUE, slots.data(), &count), "C_GetSlotList");
    for (CK_SLOT_ID slot : slots) {
        CK_TOKEN_INFO info;
        check(p11->C_GetTokenInfo(slot, &info), "C_GetTokenInfo");
        if (std::memcmp(info.label, padded(token_label, 32).data(), 32) == 0)
            return slot;
    }
    throw std::runtime_error("no token labelled " + token_label);
}

CK_OBJECT_HANDLE find_private_key(CK_FUNCTION_LIST *p11, CK_SESSION_HANDLE session,
                                  const std::string &label, CK_KEY_TYPE &key_type) {
    CK_OBJECT_CLASS key_class = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE search[] = {{CKA_CLASS, &key_class, sizeof key_class},
                             {CKA_LABEL, const_cast<char *>(label.data()), label.size()}};
    check(p11->C_FindObjectsInit(session, search, 2), "C_FindObjectsInit");
    CK_OBJECT_HANDLE key = 0;
    CK_ULONG found = 0;
    CK_RV rv = p11->C_FindObjects(session, &key, 1, &found);
    p11->C_FindObjectsFinal(session);
    check(rv, "C_FindObjects");
    if (found != 1)
        throw std::runtime_error("no private key labelled " + label);
    CK_ATTRIBUTE type = {CKA_KEY_TYPE, &key_type, sizeof key_type};
    check(p11->C_GetAttributeValue(session, key, &type, 1), "C_GetAttributeValue");
    return key;
}

std::string read_pin(const std::string &path) {
    std::ifstream file(path);
    std::string pin;
    if (!std::getline(file, pin) || pin.empty())
        throw std::runtime_error("cannot read a PIN from " + path);
    return pin;
}

// Signs count inputs in one session, as libp11 does for each CMS signature: C_SignInit, then
// a one-part C_Sign into a buffer of the key's size.
void sign_many(CK_FUNCTION_LIST *p11, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key,
               CK_KEY_TYPE key_type, long count) {
    std::vector<unsigned char> input(sha256_prefix, sha256_prefix + sizeof sha256_prefix);
    input.resize(input.size() + 32, 0x5a);
    CK_MECHANISM mechanism = {CKM_RSA_PKCS, nullptr, 0};
    if (key_type == CKK_EC) {
        mechanism.mechanism = CKM_ECDSA;
        input.erase(input.begin(), input.begin() + sizeof sha256_prefix);
    }
    std::vector<unsigned char> signature(1024);
    for (long i = 0; i < count; ++i) {
        CK_ULONG length = signature.size();
        check(p11->C_SignInit(session, &mechanism, key), "C_SignInit");
        check(p11->C_Sign(session, input.data(), input.size(), signature.data(), &length),
              "C_Sign");
    }
}

} // namespace

int main(int argc, char **argv) {
    if (argc != 7) {
        std::cerr << "usage: sign-throughput MODULE TOKEN_LABEL KEY_LABEL PIN_FILE COUNT "
                     "THREADS\n";
        return 2;
    }
    try {
        CK_FUNCTION_LIST *p11 = load_module(argv[1]);
        long count = std::stol(argv[5]);
        int threads = std::stoi(argv[6]);

        CK_C_INITIALIZE_ARGS initialize = {};
        initialize.flags = CKF_OS_LOCKING_OK;
        Clock::time_point start = Clock::now();
        check(p11->C_Initialize(&initialize), "C_Initialize");
        double initialize_ms = milliseconds_since(start);

        CK_SLOT_ID slot = find_slot(p11, argv[2]);
        std::vector<CK_SESSION_HANDLE> sessions(threads);
        for (auto &session : sessions)
            check(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, nullptr, nullptr, &session),
                  "C_OpenSession");
        std::string pin = read_pin(argv[4]);
        start = Clock::now();
        check(p11->C_Login(sessions[0], CKU_USER, reinterpret_cast<CK_UTF8CHAR *>(pin.data()),
                           pin.size()),
              "C_Login");
        double login_ms = milliseconds_since(start);
        CK_KEY_TYPE key_type = 0;
        CK_OBJECT_HANDLE key = find_private_key(p11, sessions[0], argv[3], key_type);

        start = Clock::now();
        std::vector<std::thread> workers;
        for (int t = 0; t < threads; ++t)
            workers.emplace_back(sign_many, p11, sessions[t], key, key_type,
                                 count / threads + (t < count % threads ? 1 : 0));
        for (auto &worker : workers)
            worker.join();
        double seconds = milliseconds_since(start) / 1000;

        std::cout << "signatures " << count << " threads " << threads << " seconds " << seconds
                  << " per_second " << count / seconds << " initialize_ms " << initialize_ms
                  << " login_ms " << login_ms << "\n";
        p11->C_Finalize(nullptr);
    } catch (const std::exception &error) {
        std::cerr << "sign-throughput: error: " << error.what() << "\n";
        return 1;
    }
    return 0;
}
