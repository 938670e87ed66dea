#include "pcsc/readers.h"

#include <cstdio>

#include <winscard.h>

namespace p11smime {
namespace {

// pcsc-lite's name for the pseudo reader whose state changes when a reader is plugged in or
// removed.
constexpr const char *plug_and_play_reader = "\\\\?PnP?\\Notification";

std::string describe(long code, const std::string &operation) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08lx", static_cast<unsigned long>(code));
    return operation + " failed: " + pcsc_stringify_error(code) + " (" + hex + ")";
}

std::string default_hint(long code) {
    if (code == SCARD_E_NO_SERVICE)
        return "start pcscd: 'systemctl start pcscd.socket', or install the pcscd package";
    return {};
}

// A PC/SC context (SCardEstablishContext), released by the destructor.
class PcscContext {
  public:
    PcscContext() {
        LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, nullptr, nullptr, &handle_);
        if (rv != SCARD_S_SUCCESS)
            throw PcscError(rv, "SCardEstablishContext");
    }
    ~PcscContext() { SCardReleaseContext(handle_); }
    PcscContext(const PcscContext &) = delete;
    PcscContext &operator=(const PcscContext &) = delete;

    SCARDCONTEXT handle() const { return handle_; }

  private:
    SCARDCONTEXT handle_ = 0;
};

std::vector<std::string> reader_names(const PcscContext &context) {
    DWORD size = 0;
    LONG rv = SCardListReaders(context.handle(), nullptr, nullptr, &size);
    if (rv == SCARD_E_NO_READERS_AVAILABLE)
        return {};
    std::vector<char> buffer(size);
    if (rv == SCARD_S_SUCCESS)
        rv = SCardListReaders(context.handle(), nullptr, buffer.data(), &size);
    if (rv == SCARD_E_NO_READERS_AVAILABLE)
        return {};
    if (rv != SCARD_S_SUCCESS)
        throw PcscError(rv, "SCardListReaders");

    // A multi-string: names ended by NUL, the list ended by an empty name.
    std::vector<std::string> names;
    for (const char *name = buffer.data(); name < buffer.data() + size && *name;
         name += names.back().size() + 1)
        names.emplace_back(name);
    return names;
}

// Reads the current state of each reader without waiting. The returned states keep pointers
// into names.
std::vector<SCARD_READERSTATE> current_states(const PcscContext &context,
                                              const std::vector<std::string> &names) {
    std::vector<SCARD_READERSTATE> states(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
        states[i].szReader = names[i].c_str();
        states[i].dwCurrentState = SCARD_STATE_UNAWARE;
    }
    if (states.empty())
        return states;
    LONG rv = SCardGetStatusChange(context.handle(), 0, states.data(), states.size());
    if (rv != SCARD_S_SUCCESS)
        throw PcscError(rv, "SCardGetStatusChange");
    return states;
}

ReaderStatus reader_status(const SCARD_READERSTATE &state) {
    ReaderStatus status;
    status.name = state.szReader;
    status.card_present = state.dwEventState & SCARD_STATE_PRESENT;
    status.card_mute = state.dwEventState & SCARD_STATE_MUTE;
    status.card_exclusive = state.dwEventState & SCARD_STATE_EXCLUSIVE;
    if (status.card_present)
        status.atr.assign(state.rgbAtr, state.rgbAtr + state.cbAtr);
    return status;
}

std::vector<ReaderStatus> statuses_of(const std::vector<SCARD_READERSTATE> &states) {
    std::vector<ReaderStatus> result;
    for (const auto &state : states)
        result.push_back(reader_status(state));
    return result;
}

bool has_card(const std::vector<ReaderStatus> &readers, const std::optional<std::string> &name) {
    for (const auto &reader : readers)
        if (reader.card_present && (!name || reader.name == *name))
            return true;
    return false;
}

// Blocks until a reader's state or the list of readers changes, or the timeout passes.
// Returns false on timeout.
bool wait_for_change(const PcscContext &context, std::vector<SCARD_READERSTATE> states,
                     DWORD timeout_ms) {
    for (auto &state : states)
        state.dwCurrentState = state.dwEventState & ~SCARD_STATE_CHANGED;
    SCARD_READERSTATE plug_and_play{};
    plug_and_play.szReader = plug_and_play_reader;
    // pcsc-lite compares the reader count kept in the high word to notice a change it missed.
    plug_and_play.dwCurrentState = static_cast<DWORD>(states.size()) << 16;
    states.push_back(plug_and_play);

    LONG rv = SCardGetStatusChange(context.handle(), timeout_ms, states.data(), states.size());
    if (rv == SCARD_E_TIMEOUT)
        return false;
    // A reader that went away while waiting is noticed when the readers are listed again.
    if (rv == SCARD_E_UNKNOWN_READER || rv == SCARD_E_READER_UNAVAILABLE ||
        rv == SCARD_S_SUCCESS)
        return true;
    throw PcscError(rv, "SCardGetStatusChange");
}

} // namespace

PcscError::PcscError(long code, const std::string &operation, std::string hint)
    : Error(describe(code, operation), hint.empty() ? default_hint(code) : std::move(hint)),
      code_(code) {}

bool PcscError::service_missing() const noexcept { return code_ == SCARD_E_NO_SERVICE; }

std::vector<ReaderStatus> list_readers() {
    PcscContext context;
    std::vector<std::string> names = reader_names(context);
    return statuses_of(current_states(context, names));
}

std::optional<std::vector<ReaderStatus>> wait_for_card(const std::optional<std::string> &reader,
                                                       std::chrono::milliseconds timeout) {
    using Clock = std::chrono::steady_clock;
    Clock::time_point deadline = Clock::now() + timeout;
    PcscContext context;
    for (;;) {
        std::vector<std::string> names = reader_names(context);
        std::vector<SCARD_READERSTATE> states = current_states(context, names);
        std::vector<ReaderStatus> readers = statuses_of(states);
        if (has_card(readers, reader))
            return readers;

        DWORD wait_ms = INFINITE;
        if (timeout.count() > 0) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                              Clock::now());
            if (left.count() <= 0)
                return std::nullopt;
            wait_ms = static_cast<DWORD>(left.count());
        }
        if (!wait_for_change(context, states, wait_ms))
            return std::nullopt;
    }
}

std::string atr_text(const std::vector<unsigned char> &atr) {
    static const char digits[] = "0123456789abcdef";
    std::string text;
    for (unsigned char byte : atr) {
        if (!text.empty())
            text += ':';
        text += digits[byte >> 4];
        text += digits[byte & 0x0f];
    }
    return text;
}

} // namespace p11smime
