// The local CA's key in a process of its own (issue 18, hole 3): the signer takes only a
// fixed-format EK public key, signs under the emulator's sandbox, keeps no fd but its socket;
// provisioning certifies only a TPM it made itself.
#include "tpm/ca_signer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <tss2/tss2_tpm2_types.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/big_endian.h"
#include "emulator/sandbox.h"
#include "error_matchers.h"
#include "state/state_store.h"
#include "tpm/provision.h"
#include "tpm/tpm_engine.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;
using vtpm::testing::expect_error;

// An RSA-2048 or P-256 key, as its public part goes to the signer.
struct TestKey {
  PkeyPtr key{nullptr, EVP_PKEY_free};
  EkPublic pub;
};

TestKey rsa_key() {
  TestKey k;
  k.key.reset(EVP_RSA_gen(2048));
  BIGNUM* n = nullptr;
  EXPECT_EQ(EVP_PKEY_get_bn_param(k.key.get(), OSSL_PKEY_PARAM_RSA_N, &n), 1);
  k.pub.modulus.resize(256);
  BN_bn2binpad(n, k.pub.modulus.data(), 256);
  BN_free(n);
  return k;
}

TestKey ecc_key() {
  TestKey k;
  k.key.reset(EVP_EC_gen("P-256"));
  uint8_t point[65];
  size_t len = 0;
  EXPECT_EQ(EVP_PKEY_get_octet_string_param(k.key.get(), OSSL_PKEY_PARAM_PUB_KEY, point,
                                            sizeof point, &len),
            1);
  EXPECT_EQ(len, 65u);
  k.pub.rsa = false;
  k.pub.x.assign(point + 1, point + 33);
  k.pub.y.assign(point + 33, point + 65);
  return k;
}

X509Ptr parse_der(const std::vector<uint8_t>& der) {
  const unsigned char* p = der.data();
  return X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())), X509_free);
}

std::string subject_cn(X509* cert) {
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return buf;
}

// Every file of a directory, its size and a hash of its content (short, for messages).
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string data = ss.str();
    out[e.path().filename().string()] = std::to_string(data.size()) + " bytes, hash " +
                                        std::to_string(std::hash<std::string>{}(data));
  }
  return out;
}

class CaSignerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = vtpm::testing::test_dir("casigner");
    fs::create_directories(base_ / "ca");
    fs::create_directories(base_ / "empty");
    key_file_ = (base_ / "ca" / "key.pem").string();
    cert_file_ = (base_ / "ca" / "cert.pem").string();
    ca_ = load_or_create_ca(key_file_, cert_file_);
  }
  void TearDown() override { fs::remove_all(base_); }

  // Confined as the hook confines it: chroot to an empty dir, the emulator's seccomp filter.
  CaSigner start() {
    const std::string empty = (base_ / "empty").string();
    return CaSigner::start(key_file_, cert_file_, "vtpm-hook EK test", [empty] {
      UniqueFd d(::open(empty.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!d) throw sys_error("open " + empty);
      confine_to_dir(d.get());
      enter_emulator_sandbox();
    });
  }

  // Sends raw bytes to a fresh signer; returns its refusal, after checking that it then ended
  // the session.
  std::string refusal(const std::vector<uint8_t>& raw) {
    const CaSigner signer = start();
    EXPECT_EQ(::write(signer.fd(), raw.data(), raw.size()), static_cast<ssize_t>(raw.size()));
    uint8_t buf[4096];
    const ssize_t n = ::read(signer.fd(), buf, sizeof buf);
    EXPECT_GT(n, 1);
    if (n <= 1) return {};
    EXPECT_EQ(buf[0], 1) << "not an error answer";
    EXPECT_EQ(::read(signer.fd(), buf, sizeof buf), 0) << "the signer did not end the session";
    return std::string(reinterpret_cast<char*>(buf) + 1, static_cast<size_t>(n - 1));
  }

  static std::vector<uint8_t> request(uint16_t alg, size_t n, uint8_t fill = 0x81) {
    std::vector<uint8_t> r;
    proto::put_u16(r, alg);
    r.insert(r.end(), n, fill);
    return r;
  }

  fs::path base_;
  std::string key_file_, cert_file_;
  LocalCa ca_;
};

TEST_F(CaSignerTest, SignsEachKeyTypeOnceUnderTheSandbox) {
  const CaSigner signer = start();
  std::vector<TestKey> keys;
  keys.push_back(rsa_key());
  keys.push_back(ecc_key());
  for (const TestKey& k : keys) {
    const X509Ptr cert = parse_der(request_ek_certificate(signer.fd(), k.pub));
    ASSERT_TRUE(cert);
    // The certificate is for the key that was sent, by the CA, with the hook's subject.
    EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), k.key.get()), 1);
    EXPECT_EQ(X509_verify(cert.get(), ca_.key.get()), 1);
    EXPECT_EQ(X509_check_issued(ca_.cert.get(), cert.get()), X509_V_OK);
    EXPECT_EQ(subject_cn(cert.get()), "vtpm-hook EK test");
  }
  // A provisioning child needs one of each: a third is refused, and ends the session.
  expect_error([&] { request_ek_certificate(signer.fd(), rsa_key().pub); },
               {"a second RSA certificate"});
  uint8_t b;
  EXPECT_EQ(::read(signer.fd(), &b, 1), 0) << "the signer did not end the session";
}

TEST_F(CaSignerTest, MalformedRequestsAreRefused) {
  EXPECT_NE(refusal(request(TPM2_ALG_RSA, 255)).find("255 bytes of modulus"), std::string::npos);
  EXPECT_NE(refusal(request(TPM2_ALG_RSA, 257)).find("257 bytes of modulus"), std::string::npos);
  EXPECT_NE(refusal(request(TPM2_ALG_ECC, 63)).find("63 bytes of point"), std::string::npos);
  EXPECT_NE(refusal(request(TPM2_ALG_ECC, 65)).find("65 bytes of point"), std::string::npos);
  EXPECT_NE(refusal(request(TPM2_ALG_SHA256, 256)).find("key type 0x000b"), std::string::npos);
  EXPECT_NE(refusal({0x00}).find("request of 1 bytes"), std::string::npos);
  // Longer than any request: cut at the bound, and refused all the same.
  EXPECT_NE(refusal(request(TPM2_ALG_RSA, 4000)).find("bytes of modulus"), std::string::npos);
  // The right size, not a key.
  EXPECT_NE(refusal(request(TPM2_ALG_RSA, 256, 0x7f)).find("shorter than 2048 bits"),
            std::string::npos);
  EXPECT_NE(refusal(request(TPM2_ALG_RSA, 256, 0x80)).find("not a valid RSA"), std::string::npos);
  EXPECT_NE(refusal(request(TPM2_ALG_ECC, 64, 0x01)).find("ECC"), std::string::npos);
}

TEST_F(CaSignerTest, KeepsNoFdButItsSocket) {
  UniqueFd extra(::open(base_.c_str(), O_RDONLY | O_DIRECTORY));  // not O_CLOEXEC: a fork keeps it
  ASSERT_TRUE(extra);
  const CaSigner signer = start();
  std::map<int, std::string> fds;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(signer.pid()) + "/fd"))
    fds[std::stoi(e.path().filename())] = fs::read_symlink(e.path()).string();
  ASSERT_EQ(fds.size(), 4u);
  for (int fd = 0; fd <= 2; ++fd) EXPECT_EQ(fds[fd], "/dev/null");
  EXPECT_EQ(fds[3].rfind("socket:", 0), 0u) << fds[3];
}

TEST_F(CaSignerTest, ACaThatCannotBeReadIsOneError) {
  { std::ofstream(key_file_) << "not a key\n"; }
  expect_error([&] { start(); }, {"read CA key", key_file_});
}

// Whoever can write a state dir (a compromised emulator, the runAs user) plants a TPM whose
// seeds they know, after setup found none there: provisioning must not certify its EKs.
TEST_F(CaSignerTest, ProvisioningRefusesStateThatAppeared) {
  const fs::path other = base_ / "other", victim = base_ / "victim";
  {
    const StateStore s(other.string(), TpmVersion::V2, /*create=*/true);
    TpmEngine e(s);
  }
  const std::string permall = "tpm2-00.permall";
  ASSERT_TRUE(fs::exists(other / permall));
  for (const char* planted : {"tpm2-00.permall", "tpm2-00.volatilestate"}) {
    const StateStore store(victim.string(), TpmVersion::V2, /*create=*/true);
    fs::copy_file(other / permall, victim / planted, fs::copy_options::overwrite_existing);
    const auto before = snapshot(victim);
    bool signed_any = false;
    expect_error(
        [&] {
          provision_new_tpm(store, {}, [&](const EkPublic& ek) {
            signed_any = true;
            return make_ek_certificate(ek, ca_, "planted");
          });
        },
        {"already holds", planted, victim.string()});
    EXPECT_FALSE(signed_any);
    EXPECT_EQ(snapshot(victim), before);  // nothing written, no ek-certificates.pem
    fs::remove(victim / planted);
  }
}

TEST_F(CaSignerTest, ProvisioningANewTpmThroughTheSigner) {
  const fs::path dir = base_ / "tpm";
  const CaSigner signer = start();
  const StateStore store(dir.string(), TpmVersion::V2, /*create=*/true);
  const auto certs = provision_new_tpm(
      store, {}, [&](const EkPublic& ek) { return request_ek_certificate(signer.fd(), ek); });
  ASSERT_EQ(certs.size(), 2u);
  for (const auto& c : certs) {
    const X509Ptr cert = parse_der(c.der);
    ASSERT_TRUE(cert);
    EXPECT_EQ(X509_verify(cert.get(), ca_.key.get()), 1);
    EXPECT_EQ(EVP_PKEY_get_base_id(X509_get0_pubkey(cert.get())),
              c.slot.rsa ? EVP_PKEY_RSA : EVP_PKEY_EC);
  }
  EXPECT_TRUE(fs::exists(dir / kEkCertificatesFile));
}

}  // namespace
}  // namespace vtpm
