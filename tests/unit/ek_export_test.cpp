// The host's copy of a TPM's EK certificates, as a verifier gets it: parsed strictly, read
// without following anything the emulator (which may write its state dir) put there.
#include "hook/ek_export.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/io_util.h"
#include "error_matchers.h"
#include "hook/hooks.h"
#include "hook/run_record.h"
#include "oci/measurement.h"
#include "state/state_store.h"
#include "tpm/local_ca.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;
using vtpm::testing::expect_error;

class EkExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = vtpm::testing::test_dir("ek");
    opts_.state_root = (base_ / "state").string();
    opts_.run_root = (base_ / "run").string();
    opts_.ca_key = (base_ / "ca" / "key.pem").string();
    opts_.ca_cert = (base_ / "ca" / "cert.pem").string();
    fs::create_directories(base_ / "ca");
    fs::create_directories(base_ / "state" / "c1", ec_);
    load_or_create_ca(opts_.ca_key, opts_.ca_cert);
  }
  void TearDown() override { fs::remove_all(base_); }

  static std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  fs::path base_;
  HookOptions opts_;
  std::error_code ec_;
};

TEST_F(EkExportTest, CaIsExportedAsOneCertificate) {
  const std::string pem = render_ca(opts_);
  EXPECT_EQ(pem, slurp(opts_.ca_cert));
  const auto certs = parse_certificates(pem, "ca");
  ASSERT_EQ(certs.size(), 1u);
  EXPECT_FALSE(certs[0].rsa);  // the local CA is ECDSA P-256
  EXPECT_EQ(certs[0].bits, 256);
  EXPECT_EQ(certs[0].public_key_sha256.size(), 64u);
  EXPECT_NE(certs[0].public_key_pem.find("BEGIN PUBLIC KEY"), std::string::npos);
}

TEST_F(EkExportTest, NoCaYetIsOneClearError) {
  fs::remove(opts_.ca_cert);
  expect_error([&] { render_ca(opts_); }, {"no local CA", "createCerts"});
}

TEST_F(EkExportTest, PemBundleRoundTripsAndGarbageIsAnError) {
  const std::string one = slurp(opts_.ca_cert);
  EXPECT_EQ(parse_certificates(one + one, "two").size(), 2u);
  EXPECT_TRUE(parse_certificates("", "empty").empty());
  std::string broken = one;
  broken.replace(broken.find('\n') + 5, 8, "!!!!!!!!");  // inside the base64 body
  expect_error([&] { parse_certificates(broken, "broken"); }, {"broken"});
}

TEST_F(EkExportTest, TpmWithoutCertificatesIsOneClearError) {
  expect_error([&] { find_ek_certificates(opts_, "c1", 0); }, {"c1", "no EK certificates"});
  expect_error([&] { find_ek_certificates(opts_, "../c1", 0); }, {"--id has a character"});
  expect_error([&] { find_ek_certificates(opts_, "gone", 0); }, {"no live container gone"});
}

TEST_F(EkExportTest, DefaultStateOfAStoppedContainerIsFound) {
  std::ofstream(base_ / "state" / "c1" / kEkCertificatesFile) << slurp(opts_.ca_cert);
  const auto ek = find_ek_certificates(opts_, "c1", 0);
  EXPECT_EQ(ek.state_path, opts_.state_root + "/c1");
  ASSERT_EQ(ek.eks.size(), 1u);
  const std::string text = render_ek(ek, false);
  EXPECT_NE(text.find("EK ECC 256 (handle 0x8101000a, certificate in NV 0x01c0000a)"),
            std::string::npos)
      << text;
  const auto j = nlohmann::json::parse(render_ek(ek, true));
  EXPECT_EQ(j["eks"][0]["type"], "ecc");
  EXPECT_EQ(j["eks"][0]["publicKeySha256"], ek.eks[0].public_key_sha256);
}

TEST_F(EkExportTest, RunRecordNamesTheStateOfARunningContainer) {
  fs::create_directories(base_ / "elsewhere" / "tpm");
  std::ofstream(base_ / "elsewhere" / "tpm" / kEkCertificatesFile) << slurp(opts_.ca_cert);
  RunRecord rec{"c2", "/b", 0, {}};
  VtpmRecord v;
  v.state_path = (base_ / "elsewhere" / "tpm").string();
  v.state_root = (base_ / "elsewhere").string();
  rec.vtpms.push_back(v);
  write_run_record(opts_.run_root, rec);
  EXPECT_EQ(find_ek_certificates(opts_, "c2", 0).eks.size(), 1u);
  expect_error([&] { find_ek_certificates(opts_, "c2", 1); }, {"has no vTPM 1"});
}

TEST_F(EkExportTest, MeasurementLogOfARunningContainerAndItsReplay) {
  RunRecord rec{"c3", "/b", 0, {}};
  rec.vtpms.push_back(VtpmRecord{});
  write_run_record(opts_.run_root, rec);
  expect_error([&] { render_measurement_log(opts_, "c3", 0, false); }, {"no measured launch"});
  const auto events =
      launch_events(nlohmann::json::parse(R"({"process":{"args":["sh"]}})"), ImageSource::None);
  const std::string log = cel_log(events, 21, {"sha1", "sha256"});
  write_measurement_log(opts_.run_root, "c3", 0, log);
  EXPECT_EQ(render_measurement_log(opts_, "c3", 0, false), log);
  // The host's copy, read-only for everyone.
  const std::string host = measurement_log_path(opts_.run_root, "c3", 0);
  struct stat a {};
  ASSERT_EQ(::stat(host.c_str(), &a), 0);
  EXPECT_EQ(a.st_mode & 07777, 0444u);
  // The replay: PCR = H(H(H(0 || d0) || d1) || d2), here by hand with SHA-256.
  std::vector<uint8_t> pcr(32, 0);
  for (const auto& e : events) {
    std::vector<uint8_t> in = pcr;
    in.insert(in.end(), e.digests.at("sha256").begin(), e.digests.at("sha256").end());
    unsigned len = 0;
    ASSERT_TRUE(EVP_Digest(in.data(), in.size(), pcr.data(), &len, EVP_sha256(), nullptr));
  }
  const auto replay = nlohmann::json::parse(render_measurement_log(opts_, "c3", 0, true));
  EXPECT_EQ(replay["pcr"], 21);
  EXPECT_EQ(replay["banks"]["sha256"], to_hex(pcr));
  EXPECT_EQ(replay["banks"].size(), 2u);
  expect_error([&] { render_measurement_log(opts_, "c3", 1, false); }, {"has no vTPM 1"});
  // Teardown's removal of the record takes the logs with it.
  remove_run_record(opts_.run_root, "c3");
  EXPECT_FALSE(fs::exists(host));
  expect_error([&] { render_measurement_log(opts_, "c3", 0, false); }, {"is not running"});
  expect_error([&] { render_measurement_log(opts_, "../c3", 0, false); }, {"--id"});
}

TEST_F(EkExportTest, WhatTheEmulatorPutThereIsNotFollowed) {
  const fs::path f = base_ / "state" / "c1" / kEkCertificatesFile;
  fs::create_symlink(opts_.ca_cert, f);  // would "export" another file
  expect_error([&] { find_ek_certificates(opts_, "c1", 0); }, {kEkCertificatesFile});
  fs::remove(f);
  ASSERT_EQ(::mkfifo(f.c_str(), 0600), 0);  // would hang a blocking open
  expect_error([&] { find_ek_certificates(opts_, "c1", 0); }, {"not a regular file"});
  fs::remove(f);
  std::ofstream(f) << std::string(70 * 1024, 'x');  // over the size cap
  expect_error([&] { find_ek_certificates(opts_, "c1", 0); }, {kEkCertificatesFile});
}

}  // namespace
}  // namespace vtpm
