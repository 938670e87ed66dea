// Text and JSON renderings of `list` and `verify` results.
#pragma once

#include <ostream>

#include <string>
#include <vector>

#include "cms/decrypt.h"
#include "cms/verify.h"
#include "common/error.h"
#include "common/ossl.h"
#include "token/token.h"

namespace p11smime::cli {

void print_module_text(std::ostream &out, const ModuleInfo &module);
void print_module_json(std::ostream &out, const ModuleInfo &module);

void print_verify_text(std::ostream &out, const VerifyResult &result);
void print_verify_json(std::ostream &out, const VerifyResult &result);

void print_encrypt_json(std::ostream &out, const std::vector<X509Ptr> &recipients,
                        const std::string &cipher, bool rsa_oaep);

// One line of JSON per file of a batch (JSON Lines): the file, its exit status and the
// report that the single-file form prints, or the error that stopped it.
void print_batch_verify_json(std::ostream &out, const std::string &file, int status,
                             const VerifyResult &result);
void print_batch_encrypt_json(std::ostream &out, const std::string &file,
                              const std::vector<X509Ptr> &recipients, const std::string &cipher,
                              bool rsa_oaep);
void print_batch_decrypt_json(std::ostream &out, const std::string &file, int status,
                              const DecryptResult &result);
void print_batch_error_json(std::ostream &out, const std::string &file, const Error &error);

void print_decrypt_text(std::ostream &out, const DecryptResult &result);
void print_decrypt_json(std::ostream &out, const DecryptResult &result);

} // namespace p11smime::cli
