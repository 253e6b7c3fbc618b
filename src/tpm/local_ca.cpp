#include "tpm/local_ca.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <spdlog/fmt/fmt.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>

#include "common/error.h"
#include "common/io_util.h"
#include "common/unique_fd.h"

namespace vtpm {
namespace {

Error ssl_error(const std::string& what) {
  char buf[256] = "unknown error";
  if (const unsigned long e = ERR_get_error()) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return Error(what + ": " + buf);
}

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using NamePtr = std::unique_ptr<X509_NAME, Deleter<X509_NAME, X509_NAME_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || !X509_add_ext(cert, ext.get(), -1)) throw ssl_error("certificate extension");
}

void set_serial_and_validity(X509* cert, long days) {
  uint8_t serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) throw ssl_error("random serial");
  serial[0] &= 0x7f;
  BnPtr bn(BN_bin2bn(serial, sizeof serial, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert))) throw ssl_error("serial");
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 60L * 60 * 24 * days);
}

// PEM written into memory first, then to the file crash-safely; the copy in memory is wiped.
void write_pem_atomically(const std::string& path, const std::function<bool(BIO*)>& write) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || !write(bio.get())) throw ssl_error("PEM for " + path);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  if (len <= 0) throw ssl_error("PEM for " + path);
  write_file_atomic(path,
                    std::span(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(len)));
  OPENSSL_cleanse(data, static_cast<size_t>(len));
}

// subjectAltName directoryName with the TCG TPM attributes (manufacturer, model, version).
void add_tpm_identity(X509* cert) {
  NamePtr dn(X509_NAME_new());
  const std::pair<const char*, const char*> attrs[] = {{"2.23.133.2.1", "id:49424D00"},
                                                       {"2.23.133.2.2", "vtpm-hook"},
                                                       {"2.23.133.2.3", "id:20191023"}};
  for (const auto& [oid, value] : attrs) {
    std::unique_ptr<ASN1_OBJECT, Deleter<ASN1_OBJECT, ASN1_OBJECT_free>> obj(OBJ_txt2obj(oid, 1));
    if (!obj ||
        !X509_NAME_add_entry_by_OBJ(dn.get(), obj.get(), MBSTRING_ASC,
                                    reinterpret_cast<const unsigned char*>(value), -1, -1, 0))
      throw ssl_error("TPM identity attribute");
  }
  GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
  GENERAL_NAME* gn = GENERAL_NAME_new();
  GENERAL_NAME_set0_value(gn, GEN_DIRNAME, dn.release());
  sk_GENERAL_NAME_push(names, gn);
  const int ok = X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT);
  GENERAL_NAMES_free(names);
  if (ok != 1) throw ssl_error("subjectAltName");
}

LocalCa create_ca() {
  LocalCa ca;
  ca.key.reset(EVP_EC_gen("P-256"));
  if (!ca.key) throw ssl_error("generate the CA key");
  ca.cert.reset(X509_new());
  X509* c = ca.cert.get();
  X509_set_version(c, 2);
  set_serial_and_validity(c, 3650);
  X509_NAME* name = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("vtpm-hook local EK CA"), -1,
                             -1, 0);
  X509_set_issuer_name(c, name);
  X509_set_pubkey(c, ca.key.get());
  add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE");
  add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(c, c, NID_subject_key_identifier, "hash");
  if (!X509_sign(c, ca.key.get(), EVP_sha256())) throw ssl_error("self-sign the CA");
  return ca;
}

LocalCa read_ca(const std::string& key_file, const std::string& cert_file) {
  LocalCa ca;
  if (FILE* f = std::fopen(key_file.c_str(), "r")) {
    ca.key.reset(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr));
    std::fclose(f);
  }
  if (!ca.key) throw ssl_error("read CA key " + key_file);
  if (FILE* f = std::fopen(cert_file.c_str(), "r")) {
    ca.cert.reset(PEM_read_X509(f, nullptr, nullptr, nullptr));
    std::fclose(f);
  }
  if (!ca.cert) throw ssl_error("read CA certificate " + cert_file);
  if (X509_check_private_key(ca.cert.get(), ca.key.get()) != 1)
    throw Error("CA key " + key_file + " does not belong to " + cert_file);
  return ca;
}

}  // namespace

PkeyPtr ek_public_key(const EkPublic& ek) {
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> bld(OSSL_PARAM_BLD_new(),
                                                                      OSSL_PARAM_BLD_free);
  BnPtr n, e;
  std::vector<uint8_t> point;
  if (ek.rsa) {
    n.reset(BN_bin2bn(ek.modulus.data(), static_cast<int>(ek.modulus.size()), nullptr));
    e.reset(BN_new());
    BN_set_word(e.get(), 65537);
    OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get());
    OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get());
  } else {
    point.push_back(0x04);  // uncompressed
    point.insert(point.end(), ek.x.begin(), ek.x.end());
    point.insert(point.end(), ek.y.begin(), ek.y.end());
    OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
    OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                     point.size());
  }
  std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> params(OSSL_PARAM_BLD_to_param(bld.get()),
                                                                 OSSL_PARAM_free);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, ek.rsa ? "RSA" : "EC", nullptr), EVP_PKEY_CTX_free);
  EVP_PKEY* key = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
    throw ssl_error("EK public key");
  return PkeyPtr(key, EVP_PKEY_free);
}

LocalCa load_or_create_ca(const std::string& key_file, const std::string& cert_file) {
  struct stat st {};
  if (::stat(key_file.c_str(), &st) == 0 && ::stat(cert_file.c_str(), &st) == 0)
    return read_ca(key_file, cert_file);
  const auto dir = std::filesystem::path(key_file).parent_path();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);  // when it fails, opening the lock says why
  // One creator at a time; the others wait and then read what it wrote.
  UniqueFd lock(::open((dir / ".ca.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX) != 0)
    throw sys_error("lock the local CA in " + dir.string());
  if (::stat(key_file.c_str(), &st) == 0 && ::stat(cert_file.c_str(), &st) == 0)
    return read_ca(key_file, cert_file);
  LocalCa ca = create_ca();
  write_pem_atomically(key_file, [&](BIO* b) {
    return PEM_write_bio_PrivateKey(b, ca.key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  });
  write_pem_atomically(cert_file,
                       [&](BIO* b) { return PEM_write_bio_X509(b, ca.cert.get()) == 1; });
  return ca;
}

std::vector<uint8_t> make_ek_certificate(const EkPublic& ek, const LocalCa& ca,
                                         const std::string& subject_id) {
  X509Ptr cert(X509_new(), X509_free);
  X509* c = cert.get();
  X509_set_version(c, 2);
  set_serial_and_validity(c, 3650);
  X509_set_issuer_name(c, X509_get_subject_name(ca.cert.get()));
  X509_NAME* name = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(subject_id.c_str()), -1, -1, 0);
  PkeyPtr pub = ek_public_key(ek);
  X509_set_pubkey(c, pub.get());
  add_ext(c, ca.cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_ext(c, ca.cert.get(), NID_key_usage,
          ek.rsa ? "critical,keyEncipherment" : "critical,keyAgreement");
  add_ext(c, ca.cert.get(), NID_authority_key_identifier, "keyid");
  // TCG: the TPM's manufacturer, model and version (libtpms: "IBM", "swtpm", 2.0) and the
  // EK certificate purpose.
  add_tpm_identity(c);
  add_ext(c, ca.cert.get(), NID_ext_key_usage, "2.23.133.8.1");
  if (!X509_sign(c, ca.key.get(), EVP_sha256())) throw ssl_error("sign the EK certificate");
  const int len = i2d_X509(c, nullptr);
  if (len <= 0) throw ssl_error("encode the EK certificate");
  std::vector<uint8_t> der(static_cast<size_t>(len));
  unsigned char* p = der.data();
  if (i2d_X509(c, &p) != len) throw ssl_error("encode the EK certificate");
  return der;
}

namespace {

using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

std::string bio_string(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
}

}  // namespace

std::string certificates_pem(std::span<const std::vector<uint8_t>> ders) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) throw ssl_error("PEM buffer");
  for (const auto& der : ders) {
    const unsigned char* p = der.data();
    X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())), X509_free);
    if (!cert || !PEM_write_bio_X509(bio.get(), cert.get())) throw ssl_error("certificate PEM");
  }
  return bio_string(bio.get());
}

std::vector<CertificateInfo> parse_certificates(const std::string& pem, const std::string& what) {
  BioPtr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!in) throw ssl_error(what);
  std::vector<CertificateInfo> out;
  while (X509* raw = PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr)) {
    const X509Ptr cert(raw, X509_free);
    EVP_PKEY* key = X509_get0_pubkey(cert.get());  // owned by cert
    if (!key) throw ssl_error(what + ": public key");
    CertificateInfo info;
    info.rsa = EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA;
    info.bits = EVP_PKEY_get_bits(key);
    BioPtr cert_pem(BIO_new(BIO_s_mem())), key_pem(BIO_new(BIO_s_mem()));
    if (!cert_pem || !key_pem || !PEM_write_bio_X509(cert_pem.get(), cert.get()) ||
        !PEM_write_bio_PUBKEY(key_pem.get(), key))
      throw ssl_error(what + ": PEM");
    info.certificate_pem = bio_string(cert_pem.get());
    info.public_key_pem = bio_string(key_pem.get());
    // SHA-256 of the DER SubjectPublicKeyInfo: what `openssl pkey -pubin -outform der | sha256sum`
    // prints, a name for the key that survives re-issued certificates.
    unsigned char* spki = nullptr;
    const int n = i2d_PUBKEY(key, &spki);
    if (n <= 0) throw ssl_error(what + ": public key DER");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    const bool ok = EVP_Digest(spki, static_cast<size_t>(n), md, &md_len, EVP_sha256(), nullptr);
    OPENSSL_free(spki);
    if (!ok) throw ssl_error(what + ": SHA-256");
    info.public_key_sha256 = to_hex(std::span(md, md_len));
    out.push_back(std::move(info));
  }
  // The loop ends at the first non-certificate: only "no more PEM" is a clean end.
  if (const unsigned long e = ERR_peek_last_error(); e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE)
    throw ssl_error(what);
  ERR_clear_error();
  return out;
}

}  // namespace vtpm
