#pragma once
// The local CA that signs EK certificates, and the certificates themselves (OpenSSL).
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace vtpm {

using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;

struct LocalCa {
  PkeyPtr key{nullptr, EVP_PKEY_free};
  X509Ptr cert{nullptr, X509_free};
};

// Loads key_file + cert_file (PEM); when both are absent, creates them first (an ECDSA P-256
// self-signed CA), once, under an exclusive lock, even with many hooks starting at once.
LocalCa load_or_create_ca(const std::string& key_file, const std::string& cert_file);

// An EK's public key, as the TPM returned it.
struct EkPublic {
  bool rsa = true;
  std::vector<uint8_t> modulus;  // RSA (exponent 65537)
  std::vector<uint8_t> x, y;     // ECC P-256
};

// The key as OpenSSL holds it. Throws Error when OpenSSL refuses it.
PkeyPtr ek_public_key(const EkPublic& ek);

// A DER EK certificate (TCG EK credential profile shape) for ek, signed by ca.
std::vector<uint8_t> make_ek_certificate(const EkPublic& ek, const LocalCa& ca,
                                         const std::string& subject_id);

// DER certificates as one PEM bundle.
std::string certificates_pem(std::span<const std::vector<uint8_t>> ders);

struct CertificateInfo {
  bool rsa = false;  // else ECC
  int bits = 0;
  std::string certificate_pem;
  std::string public_key_pem;     // SubjectPublicKeyInfo
  std::string public_key_sha256;  // hex, of the DER SubjectPublicKeyInfo
};

// Every certificate of a PEM bundle. Throws Error naming `what` on anything else in it.
std::vector<CertificateInfo> parse_certificates(const std::string& pem, const std::string& what);

}  // namespace vtpm
