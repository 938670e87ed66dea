// Internal to cms/: reading a CMS ContentInfo of any size in bounded memory. OpenSSL decodes a
// CMS structure only whole, so the content octets, which can be gigabytes, are taken out of
// the stream and what remains is decoded as a CMS structure with detached content.
#pragma once

#include <functional>

#include "cms/stream.h"
#include "common/ossl.h"

namespace p11smime {

// A CMS ContentInfo without its content, and whether content was taken out of it.
struct SplitCms {
    CmsPtr structure;
    bool had_content = false;
};

// Reads a DER or BER ContentInfo from der. For SignedData the eContent octets, and for
// EnvelopedData and AuthEnvelopedData the encryptedContent octets, go to content in order;
// the rest is decoded into structure, in which that content is absent (detached), so that
// CMS_verify() and CMS_decrypt() take it from a BIO. Other content types are decoded whole.
// Throws Error when the input is not a CMS structure or when the part outside the content is
// larger than max_cms_structure_size.
SplitCms split_cms(Reader &der, const std::function<void(const char *, size_t)> &content);

// Returns the NID of the content type of the ContentInfo at the start of der, reading only its
// first bytes, or NID_undef when der does not start with a ContentInfo.
int peek_cms_type(Reader &der);

// Writes cms to out in BER with indefinite lengths (BIO_new_CMS) while its content is read
// from content; at the end OpenSSL finalises the structure, signing or encrypting it. Throws
// OpensslError, or the Error that content throws.
void stream_cms(CMS_ContentInfo *cms, Reader &content, BIO *out);

// Largest part of a CMS structure outside its content that split_cms() keeps in memory:
// certificates, CRLs, RecipientInfos and SignerInfos of real mail are a few kilobytes.
constexpr size_t max_cms_structure_size = 16 * 1024 * 1024;

} // namespace p11smime
