// Owning handles for the OpenSSL objects that p11smime passes between layers.
#pragma once

#include <memory>
#include <string>

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

namespace p11smime {

// Deleter calling a C free function, so each OpenSSL type gets a one-line unique_ptr alias.
template <auto FreeFunction> struct CDeleter {
    template <typename T> void operator()(T *handle) const noexcept { FreeFunction(handle); }
};

using BioPtr = std::unique_ptr<BIO, CDeleter<BIO_free_all>>;
using CmsPtr = std::unique_ptr<CMS_ContentInfo, CDeleter<CMS_ContentInfo_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, CDeleter<EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, CDeleter<X509_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, CDeleter<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, CDeleter<X509_STORE_CTX_free>>;

inline void free_x509_stack(STACK_OF(X509) * stack) noexcept {
    sk_X509_pop_free(stack, X509_free);
}
using X509StackPtr = std::unique_ptr<STACK_OF(X509), CDeleter<free_x509_stack>>;

// Returns a copy of the bytes written to a memory BIO (BIO_s_mem).
inline std::string memory_bio_text(BIO *bio) {
    char *data = nullptr;
    long length = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<size_t>(length));
}

} // namespace p11smime
