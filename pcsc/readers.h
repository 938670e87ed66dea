// Smart card readers through PC/SC (pcsc-lite and its pcscd service).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace p11smime {

// Error raised by a PC/SC call. The message names the SCARD_ code and the operation.
class PcscError : public Error {
  public:
    PcscError(long code, const std::string &operation, std::string hint = {});

    long code() const noexcept { return code_; }

    // True when pcscd is not running or cannot be reached (SCARD_E_NO_SERVICE).
    bool service_missing() const noexcept;

  private:
    long code_;
};

// A reader and its card, from SCardGetStatusChange.
struct ReaderStatus {
    std::string name;
    bool card_present = false;
    bool card_mute = false;      // a card that sends no ATR (SCARD_STATE_MUTE)
    bool card_exclusive = false; // in exclusive use by another application
    std::vector<unsigned char> atr;
};

// Returns the readers known to pcscd, in its order, with the state of their cards. No
// readers is an empty list. Throws PcscError, such as when pcscd is not running.
std::vector<ReaderStatus> list_readers();

// Waits until a card is present in the named reader, or in any reader when reader is
// empty, and returns the readers then. Returns at once when such a card is already present.
// Readers plugged in while waiting count too. A zero timeout waits without limit. Returns
// nothing when the timeout passes first. Throws PcscError.
std::optional<std::vector<ReaderStatus>> wait_for_card(const std::optional<std::string> &reader,
                                                       std::chrono::milliseconds timeout);

// Formats an ATR as colon-separated lowercase hexadecimal, as pcsc_scan and opensc-tool do.
std::string atr_text(const std::vector<unsigned char> &atr);

} // namespace p11smime
