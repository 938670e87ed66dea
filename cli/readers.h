// What `readers` and `doctor` share: pairing PC/SC readers with the PKCS#11 slots that serve
// them.
#pragma once

#include <string>
#include <vector>

#include "token/token.h"

namespace p11smime::cli {

// Returns the module's slots for the reader. OpenSC and ykcs11 give each slot the reader's
// name as its description, cut to the 64 characters of CK_SLOT_INFO.
std::vector<const SlotInfo *> slots_for_reader(const ModuleInfo &module,
                                               const std::string &reader);

} // namespace p11smime::cli
