// A PKCS#11 module for tests that forwards every call to a real module (SoftHSM) and makes
// chosen calls fail with chosen CKR_ values. It simulates a token that is pulled out, an HSM
// that restarts or sessions that are closed under the caller.
//
// Environment, read when the module is loaded:
//   P11FAULT_MODULE   path of the real module (required)
//   P11FAULT_CONTROL  path of the control file, read again on every call (optional)
//   P11FAULT_LOG      file that gets one line per call: "C_Sign CKR_OK" (optional)
//
// Control file, one rule a line; '#' starts a comment:
//   FUNCTION CKR_NAME [skip N] [count M] [close-sessions] [delay MS]
//       Of the calls to FUNCTION, the first N pass, the next M (default: all) return
//       CKR_NAME without reaching the real module. close-sessions also closes every session
//       of the real module first, as a removed token does, so the caller's handles die.
//       delay makes each of those M calls sleep MS milliseconds first, as a slow token
//       does. With CKR_OK the call is not failed: it sleeps, then goes to the real module.
//   C_GetTokenInfo flags CKF_NAME...
//       Sets these flags in every CK_TOKEN_INFO returned, e.g. CKF_USER_PIN_FINAL_TRY.
// Call counts of each rule live in this process and survive unloading, because the module is
// linked with -z nodelete; a changed rule line starts a new count.
#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include <p11-kit/pkcs11.h>

namespace {

struct Name {
    const char *text;
    unsigned long value;
};

#define FAULT_NAME(name) {#name, name}

constexpr Name return_values[] = {
    FAULT_NAME(CKR_OK),
    FAULT_NAME(CKR_GENERAL_ERROR),
    FAULT_NAME(CKR_FUNCTION_FAILED),
    FAULT_NAME(CKR_DEVICE_ERROR),
    FAULT_NAME(CKR_DEVICE_MEMORY),
    FAULT_NAME(CKR_DEVICE_REMOVED),
    FAULT_NAME(CKR_PIN_INCORRECT),
    FAULT_NAME(CKR_PIN_LOCKED),
    FAULT_NAME(CKR_SESSION_CLOSED),
    FAULT_NAME(CKR_SESSION_HANDLE_INVALID),
    FAULT_NAME(CKR_TOKEN_NOT_PRESENT),
    FAULT_NAME(CKR_USER_NOT_LOGGED_IN),
    FAULT_NAME(CKR_CRYPTOKI_NOT_INITIALIZED),
    FAULT_NAME(CKR_OBJECT_HANDLE_INVALID),
    FAULT_NAME(CKR_KEY_HANDLE_INVALID),
    FAULT_NAME(CKR_OPERATION_ACTIVE),
    FAULT_NAME(CKR_ENCRYPTED_DATA_INVALID),
    FAULT_NAME(CKR_MECHANISM_INVALID),
    FAULT_NAME(CKR_FUNCTION_NOT_SUPPORTED),
};

constexpr Name token_flags[] = {
    FAULT_NAME(CKF_USER_PIN_COUNT_LOW),
    FAULT_NAME(CKF_USER_PIN_FINAL_TRY),
    FAULT_NAME(CKF_USER_PIN_LOCKED),
};

#undef FAULT_NAME

std::optional<unsigned long> value_of(const std::string &text, const Name *begin,
                                      const Name *end) {
    for (const Name *name = begin; name != end; ++name)
        if (text == name->text)
            return name->value;
    return std::nullopt;
}

std::string name_of(CK_RV rv) {
    for (const Name &name : return_values)
        if (name.value == rv)
            return name.text;
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%08lx", rv);
    return hex;
}

struct Rule {
    std::string line;
    std::string function;
    CK_RV rv = CKR_OK;
    unsigned long skip = 0;
    std::optional<unsigned long> count;
    bool close_sessions = false;
    unsigned long delay_ms = 0;
    CK_FLAGS flags = 0;
};

// Parses one control line. Returns nothing for blank lines, comments and unknown words, so a
// misspelt rule has no effect and the test that relies on it fails.
std::optional<Rule> parse_rule(const std::string &line) {
    std::istringstream words(line.substr(0, line.find('#')));
    Rule rule;
    rule.line = line;
    std::string second;
    if (!(words >> rule.function >> second))
        return std::nullopt;
    if (second == "flags") {
        std::string flag;
        while (words >> flag) {
            auto value = value_of(flag, std::begin(token_flags), std::end(token_flags));
            if (!value)
                return std::nullopt;
            rule.flags |= *value;
        }
        return rule;
    }
    auto rv = value_of(second, std::begin(return_values), std::end(return_values));
    if (!rv)
        return std::nullopt;
    rule.rv = *rv;
    std::string word;
    while (words >> word) {
        if (word == "skip" && words >> rule.skip)
            continue;
        unsigned long count = 0;
        if (word == "count" && words >> count) {
            rule.count = count;
            continue;
        }
        if (word == "delay" && words >> rule.delay_ms)
            continue;
        if (word != "close-sessions")
            return std::nullopt;
        rule.close_sessions = true;
    }
    return rule;
}

struct State {
    std::mutex mutex;
    CK_FUNCTION_LIST *real = nullptr;
    CK_FUNCTION_LIST wrapped{};
    std::string control_path;
    std::string log_path;
    std::map<std::string, unsigned long> calls; // per rule line
};

State &state() {
    static State instance;
    return instance;
}

std::vector<Rule> read_rules(const std::string &path) {
    std::vector<Rule> rules;
    std::ifstream file(path);
    for (std::string line; std::getline(file, line);)
        if (auto rule = parse_rule(line))
            rules.push_back(*rule);
    return rules;
}

struct Decision {
    CK_RV rv = CKR_OK;
    bool close_sessions = false;
    unsigned long delay_ms = 0;
    CK_FLAGS flags = 0;
};

// Counts this call against each rule for function and returns what to do with it. A CKR_OK
// rule fails nothing, so the rules after it are counted too, and the longest delay of the
// matching rules applies.
Decision decide(const char *function) {
    State &s = state();
    Decision decision;
    if (s.control_path.empty())
        return decision;
    std::lock_guard<std::mutex> lock(s.mutex);
    for (const Rule &rule : read_rules(s.control_path)) {
        if (rule.function != function)
            continue;
        decision.flags |= rule.flags;
        if (rule.flags || decision.rv != CKR_OK)
            continue;
        unsigned long seen = s.calls[rule.line]++;
        bool failing = seen >= rule.skip && (!rule.count || seen < rule.skip + *rule.count);
        if (failing) {
            decision.rv = rule.rv;
            decision.close_sessions = rule.close_sessions;
            decision.delay_ms = std::max(decision.delay_ms, rule.delay_ms);
        }
    }
    return decision;
}

// Sleeps for the delay of a decision, outside the state lock so that other threads' calls go
// on meanwhile.
void wait_for(const Decision &decision) {
    if (decision.delay_ms > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(decision.delay_ms));
}

void log_call(const char *function, CK_RV rv, bool injected) {
    const std::string &path = state().log_path;
    if (path.empty())
        return;
    std::string line = std::string(function) + " " + name_of(rv) + (injected ? " injected" : "") +
                       "\n";
    int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    (void)!write(fd, line.data(), line.size());
    close(fd);
}

// Held shared by every call forwarded to the real module, and exclusively while its sessions
// are closed. SoftHSM frees a session's key objects under a thread that is still signing with
// them and crashes, where a removed token fails the call in progress instead.
std::shared_mutex &forwarding_lock() {
    static std::shared_mutex lock;
    return lock;
}

// Closes every session of the real module, as removing the token does, once the calls in
// flight have returned.
void close_all_sessions() {
    std::unique_lock lock(forwarding_lock());
    CK_FUNCTION_LIST *real = state().real;
    CK_ULONG count = 0;
    if (real->C_GetSlotList(CK_TRUE, nullptr, &count) != CKR_OK || count == 0)
        return;
    std::vector<CK_SLOT_ID> slots(count);
    if (real->C_GetSlotList(CK_TRUE, slots.data(), &count) != CKR_OK)
        return;
    for (CK_ULONG i = 0; i < count; ++i)
        real->C_CloseAllSessions(slots[i]);
}

// Ends the operation that a refused C_Sign or C_Decrypt leaves active in the real module, by
// running it into a scratch buffer. PKCS#11 ends an operation on any error but
// CKR_BUFFER_TOO_SMALL, so a real token would, and later calls in the session would otherwise
// fail with CKR_OPERATION_ACTIVE.
template <auto Member, typename... Args> void end_real_operation(Args... args) {
    // C_Sign and C_Decrypt share one signature, which the other functions mostly do not.
    if constexpr (std::is_same_v<decltype(Member), decltype(&CK_FUNCTION_LIST::C_Sign)>) {
        if (Member != &CK_FUNCTION_LIST::C_Sign && Member != &CK_FUNCTION_LIST::C_Decrypt)
            return;
        auto arguments = std::make_tuple(args...);
        std::vector<CK_BYTE> scratch(16384);
        CK_ULONG size = scratch.size();
        std::shared_lock lock(forwarding_lock());
        (state().real->*Member)(std::get<0>(arguments), std::get<1>(arguments),
                                std::get<2>(arguments), scratch.data(), &size);
    }
}

template <auto Member> struct Forwarder;

// One forwarding function per member of CK_FUNCTION_LIST, with that member's signature.
template <typename... Args, CK_RV (*CK_FUNCTION_LIST::*Member)(Args...)>
struct Forwarder<Member> {
    static inline const char *name = nullptr;

    static CK_RV call(Args... args) {
        Decision decision = decide(name);
        wait_for(decision);
        if (decision.rv != CKR_OK) {
            if (decision.close_sessions)
                close_all_sessions();
            else
                end_real_operation<Member>(args...);
            log_call(name, decision.rv, true);
            return decision.rv;
        }
        CK_RV rv;
        {
            std::shared_lock lock(forwarding_lock());
            rv = (state().real->*Member)(args...);
        }
        log_call(name, rv, false);
        return rv;
    }
};

CK_RV get_token_info(CK_SLOT_ID slot, CK_TOKEN_INFO *info) {
    Decision decision = decide("C_GetTokenInfo");
    wait_for(decision);
    if (decision.rv != CKR_OK) {
        if (decision.close_sessions)
            close_all_sessions();
        log_call("C_GetTokenInfo", decision.rv, true);
        return decision.rv;
    }
    CK_RV rv;
    {
        std::shared_lock lock(forwarding_lock());
        rv = state().real->C_GetTokenInfo(slot, info);
    }
    if (rv == CKR_OK && info)
        info->flags |= decision.flags;
    log_call("C_GetTokenInfo", rv, false);
    return rv;
}

#define FAULT_FORWARD(function)                                                                \
    if (real->function) {                                                                      \
        Forwarder<&CK_FUNCTION_LIST::function>::name = #function;                              \
        wrapped.function = Forwarder<&CK_FUNCTION_LIST::function>::call;                       \
    }

void wrap_functions(CK_FUNCTION_LIST *real, CK_FUNCTION_LIST &wrapped) {
    wrapped = *real;
    FAULT_FORWARD(C_Initialize)
    FAULT_FORWARD(C_Finalize)
    FAULT_FORWARD(C_GetInfo)
    FAULT_FORWARD(C_GetSlotList)
    FAULT_FORWARD(C_GetSlotInfo)
    FAULT_FORWARD(C_GetMechanismList)
    FAULT_FORWARD(C_GetMechanismInfo)
    FAULT_FORWARD(C_InitToken)
    FAULT_FORWARD(C_InitPIN)
    FAULT_FORWARD(C_SetPIN)
    FAULT_FORWARD(C_OpenSession)
    FAULT_FORWARD(C_CloseSession)
    FAULT_FORWARD(C_CloseAllSessions)
    FAULT_FORWARD(C_GetSessionInfo)
    FAULT_FORWARD(C_GetOperationState)
    FAULT_FORWARD(C_SetOperationState)
    FAULT_FORWARD(C_Login)
    FAULT_FORWARD(C_Logout)
    FAULT_FORWARD(C_CreateObject)
    FAULT_FORWARD(C_CopyObject)
    FAULT_FORWARD(C_DestroyObject)
    FAULT_FORWARD(C_GetObjectSize)
    FAULT_FORWARD(C_GetAttributeValue)
    FAULT_FORWARD(C_SetAttributeValue)
    FAULT_FORWARD(C_FindObjectsInit)
    FAULT_FORWARD(C_FindObjects)
    FAULT_FORWARD(C_FindObjectsFinal)
    FAULT_FORWARD(C_EncryptInit)
    FAULT_FORWARD(C_Encrypt)
    FAULT_FORWARD(C_EncryptUpdate)
    FAULT_FORWARD(C_EncryptFinal)
    FAULT_FORWARD(C_DecryptInit)
    FAULT_FORWARD(C_Decrypt)
    FAULT_FORWARD(C_DecryptUpdate)
    FAULT_FORWARD(C_DecryptFinal)
    FAULT_FORWARD(C_DigestInit)
    FAULT_FORWARD(C_Digest)
    FAULT_FORWARD(C_DigestUpdate)
    FAULT_FORWARD(C_DigestKey)
    FAULT_FORWARD(C_DigestFinal)
    FAULT_FORWARD(C_SignInit)
    FAULT_FORWARD(C_Sign)
    FAULT_FORWARD(C_SignUpdate)
    FAULT_FORWARD(C_SignFinal)
    FAULT_FORWARD(C_SignRecoverInit)
    FAULT_FORWARD(C_SignRecover)
    FAULT_FORWARD(C_VerifyInit)
    FAULT_FORWARD(C_Verify)
    FAULT_FORWARD(C_VerifyUpdate)
    FAULT_FORWARD(C_VerifyFinal)
    FAULT_FORWARD(C_VerifyRecoverInit)
    FAULT_FORWARD(C_VerifyRecover)
    FAULT_FORWARD(C_DigestEncryptUpdate)
    FAULT_FORWARD(C_DecryptDigestUpdate)
    FAULT_FORWARD(C_SignEncryptUpdate)
    FAULT_FORWARD(C_DecryptVerifyUpdate)
    FAULT_FORWARD(C_GenerateKey)
    FAULT_FORWARD(C_GenerateKeyPair)
    FAULT_FORWARD(C_WrapKey)
    FAULT_FORWARD(C_UnwrapKey)
    FAULT_FORWARD(C_DeriveKey)
    FAULT_FORWARD(C_SeedRandom)
    FAULT_FORWARD(C_GenerateRandom)
    FAULT_FORWARD(C_GetFunctionStatus)
    FAULT_FORWARD(C_CancelFunction)
    FAULT_FORWARD(C_WaitForSlotEvent)
    wrapped.C_GetTokenInfo = get_token_info;
    wrapped.C_GetFunctionList = C_GetFunctionList;
}

#undef FAULT_FORWARD

std::string environment(const char *name) {
    const char *value = std::getenv(name);
    return value ? value : "";
}

// Loads the real module once per process; it is never unloaded, like this module.
CK_RV load_real_module() {
    State &s = state();
    if (s.real)
        return CKR_OK;
    std::string path = environment("P11FAULT_MODULE");
    void *handle = path.empty() ? nullptr : dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    auto get_list =
        handle ? reinterpret_cast<CK_C_GetFunctionList>(dlsym(handle, "C_GetFunctionList"))
               : nullptr;
    if (!get_list || get_list(&s.real) != CKR_OK || !s.real) {
        std::fprintf(stderr, "pkcs11-fault: cannot load P11FAULT_MODULE '%s'\n", path.c_str());
        s.real = nullptr;
        return CKR_GENERAL_ERROR;
    }
    s.control_path = environment("P11FAULT_CONTROL");
    s.log_path = environment("P11FAULT_LOG");
    wrap_functions(s.real, s.wrapped);
    return CKR_OK;
}

} // namespace

extern "C" __attribute__((visibility("default"))) CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
    if (!list)
        return CKR_ARGUMENTS_BAD;
    std::lock_guard<std::mutex> lock(state().mutex);
    CK_RV rv = load_real_module();
    if (rv == CKR_OK)
        *list = &state().wrapped;
    return rv;
}
