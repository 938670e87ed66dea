// Text and JSON renderings of `list` and `verify` results.
#pragma once

#include <ostream>

#include "cms/verify.h"
#include "token/token.h"

namespace p11smime::cli {

void print_module_text(std::ostream &out, const ModuleInfo &module);
void print_module_json(std::ostream &out, const ModuleInfo &module);

void print_verify_text(std::ostream &out, const VerifyResult &result);
void print_verify_json(std::ostream &out, const VerifyResult &result);

} // namespace p11smime::cli
