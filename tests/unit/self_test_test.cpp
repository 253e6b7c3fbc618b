// The self-test on demand with real libtpms: the kernel's SelfTest(NO) gets TESTING and runs
// nothing, every command before the test is served correctly, and a question about the test
// runs the rest of it first.
#include "tpm/self_test.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>

#include "error_matchers.h"
#include "state/state_store.h"
#include "tpm/sapi.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

class DeferredSelfTestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = vtpm::testing::test_dir("selftest");
    std::filesystem::remove_all(dir_);
    store_.emplace(dir_.string(), TpmVersion::V2, /*create=*/true);
    engine_.emplace(*store_);
    ASSERT_EQ(rc(engine_->process(proto::startup_command(TpmVersion::V2, true))), 0u);
  }
  void TearDown() override {
    engine_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  DeferredSelfTest gate() {
    return DeferredSelfTest([this](std::span<const uint8_t> c) { return engine_->process(c); });
  }
  static uint32_t rc(const std::vector<uint8_t>& r) { return proto::response_code(r); }
  static std::vector<uint8_t> self_test(bool full) {
    const uint8_t f[] = {full ? uint8_t{TPM2_YES} : uint8_t{TPM2_NO}};
    return proto::command(proto::kTpm2StNoSessions, TPM2_CC_SelfTest, f);
  }
  // GetTestResult -> its testResult
  static uint32_t test_result(DeferredSelfTest& g) {
    const auto r = g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_GetTestResult, {}));
    EXPECT_EQ(rc(r), TPM2_RC_SUCCESS);
    EXPECT_EQ(r.size(), proto::kHeaderSize + 2 + 4);
    EXPECT_EQ(proto::get_u32(r, 2), r.size());  // the header's size field
    return r.size() >= 16 ? proto::get_u32(r, 12) : 0;
  }

  std::filesystem::path dir_;
  std::optional<StateStore> store_;
  std::optional<TpmEngine> engine_;
};

// What libtpms has not tested yet: IncrementalSelfTest's toDoList (an empty toTest list tests
// nothing). Straight to libtpms, past the gate.
size_t untested(TpmEngine& engine) {
  return untested_algorithms([&](std::span<const uint8_t> c) { return engine.process(c); }).size();
}

TEST_F(DeferredSelfTestTest, TheKernelsSelfTestGetsTestingAndRunsNothing) {
  auto g = gate();
  EXPECT_TRUE(g.pending());
  EXPECT_EQ(rc(g.process(self_test(false))), TPM2_RC_TESTING);  // the kernel takes it as success
  EXPECT_TRUE(g.pending());
  EXPECT_GT(untested(*engine_), 5u);  // libtpms 0.9 implements a few dozen algorithms
}

TEST_F(DeferredSelfTestTest, GetTestResultRunsTheRestAndTellsTheTruth) {
  auto g = gate();
  EXPECT_EQ(rc(g.process(self_test(false))), TPM2_RC_TESTING);
  EXPECT_EQ(test_result(g), TPM2_RC_SUCCESS);
  EXPECT_FALSE(g.pending());
  EXPECT_EQ(untested(*engine_), 0u);
}

TEST_F(DeferredSelfTestTest, ALaterSelfTestRunsTheRest) {
  auto g = gate();
  EXPECT_EQ(rc(g.process(self_test(false))), TPM2_RC_TESTING);
  EXPECT_EQ(rc(g.process(self_test(false))), TPM2_RC_SUCCESS);  // the container's, say
  EXPECT_FALSE(g.pending());
  EXPECT_EQ(untested(*engine_), 0u);
}

TEST_F(DeferredSelfTestTest, RunFinishesWhatIsLeft) {
  auto g = gate();
  g.run();
  EXPECT_EQ(untested(*engine_), 0u);
  EXPECT_FALSE(g.pending());
  EXPECT_EQ(test_result(g), TPM2_RC_SUCCESS);
}

TEST_F(DeferredSelfTestTest, FullTestRequestRunsItNow) {
  auto g = gate();
  EXPECT_EQ(rc(g.process(self_test(true))), TPM2_RC_SUCCESS);
  EXPECT_FALSE(g.pending());
  EXPECT_EQ(test_result(g), TPM2_RC_SUCCESS);
}

// Before the full test, a command is served by libtpms, which tests the algorithm it uses
// first: the result is the right one (here TPM2_Hash with SHA-256, checked with OpenSSL).
TEST_F(DeferredSelfTestTest, CommandsBeforeTheTestAreServedCorrectly) {
  auto g = gate();
  const std::string data = "measured before any self-test";
  std::vector<uint8_t> params;
  proto::put_u16(params, static_cast<uint16_t>(data.size()));
  params.insert(params.end(), data.begin(), data.end());
  proto::put_u16(params, TPM2_ALG_SHA256);
  proto::put_u32(params, TPM2_RH_NULL);
  const auto r = g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_Hash, params));
  ASSERT_EQ(rc(r), 0u);
  ASSERT_GE(r.size(), proto::kHeaderSize + 2 + 32);
  ASSERT_EQ(proto::get_u16(r, proto::kHeaderSize), 32u);
  std::array<uint8_t, 32> want{};
  unsigned int n = 0;
  ASSERT_EQ(EVP_Digest(data.data(), data.size(), want.data(), &n, EVP_sha256(), nullptr), 1);
  EXPECT_TRUE(std::equal(want.begin(), want.end(), r.begin() + proto::kHeaderSize + 2));
  EXPECT_TRUE(g.pending());  // nothing of that ran the full test
}

bool has(const std::vector<uint16_t>& algs, uint16_t alg) {
  return std::find(algs.begin(), algs.end(), alg) != algs.end();
}

// An ECC P-256 signing key, primary in the owner hierarchy.
TSS2_RC create_ecc_primary(TpmEngine& engine) {
  Sapi sapi(engine);
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_PUBLIC in{};
  in.publicArea.type = TPM2_ALG_ECC;
  in.publicArea.nameAlg = TPM2_ALG_SHA256;
  in.publicArea.objectAttributes = TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_FIXEDTPM |
                                   TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                                   TPMA_OBJECT_USERWITHAUTH;
  auto& ecc = in.publicArea.parameters.eccDetail;
  ecc.symmetric.algorithm = TPM2_ALG_NULL;
  ecc.scheme.scheme = TPM2_ALG_ECDSA;
  ecc.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
  ecc.curveID = TPM2_ECC_NIST_P256;
  ecc.kdf.scheme = TPM2_ALG_NULL;
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION pcrs{};
  TPM2_HANDLE handle = 0;
  TPM2B_PUBLIC out{};
  TPM2B_CREATION_DATA creation{};
  TPM2B_DIGEST hash{};
  TPMT_TK_CREATION ticket{};
  TPM2B_NAME name{};
  TSS2L_SYS_AUTH_RESPONSE auths{};
  const TSS2_RC rc =
      Tss2_Sys_CreatePrimary(sapi.get(), TPM2_RH_OWNER, Sapi::password(), &sensitive, &in, &outside,
                             &pcrs, &handle, &out, &creation, &hash, &ticket, &name, &auths);
  if (rc == TSS2_RC_SUCCESS) (void)Tss2_Sys_FlushContext(sapi.get(), handle);
  return rc;
}

// What the on-demand mode saves: a workload that uses only ECC never pays for the RSA tests
// (libtpms tests RSA by its schemes: RSASSA, RSAES, RSAPSS, OAEP); its ECC key ran ECDSA's test
// before the key was made. A question about the test then runs the RSA tests too.
TEST_F(DeferredSelfTestTest, AnEccWorkloadNeverRunsTheRsaTests) {
  auto g = gate();
  EXPECT_EQ(rc(g.process(self_test(false))), TPM2_RC_TESTING);
  const auto backend = [this](std::span<const uint8_t> c) { return engine_->process(c); };
  constexpr uint16_t kRsaSchemes[] = {TPM2_ALG_RSASSA, TPM2_ALG_RSAES, TPM2_ALG_RSAPSS,
                                      TPM2_ALG_OAEP};
  ASSERT_TRUE(has(untested_algorithms(backend), TPM2_ALG_ECDSA));
  ASSERT_EQ(create_ecc_primary(*engine_), TSS2_RC_SUCCESS);
  const auto after_ecc = untested_algorithms(backend);
  EXPECT_FALSE(has(after_ecc, TPM2_ALG_ECDSA));
  for (const uint16_t alg : kRsaSchemes) EXPECT_TRUE(has(after_ecc, alg)) << alg;
  EXPECT_TRUE(g.pending());
  EXPECT_EQ(test_result(g), TPM2_RC_SUCCESS);
  EXPECT_TRUE(untested_algorithms(backend).empty());
}

// Run by ctest emulator.selftest_broken_sha256 under the broken_sha256 shim (LD_PRELOAD), which
// flips a bit of every SHA-256 digest unless VTPM_SHA256_OK is set. A TPM made with working
// SHA-256 is powered on again with it broken: the kernel's SelfTest(NO) gets TESTING; the
// GetTestResult that follows runs the rest of the test, SHA-256's fails, the TPM is in failure
// mode, and from then on libtpms answers every command with its failure, as after a failed
// eager test.
TEST(DeferredSelfTestBroken, AFailingTestPutsTheTpmIntoFailureMode) {
  if (!std::getenv("VTPM_TEST_BROKEN_SHA256")) GTEST_SKIP() << "needs the broken_sha256 shim";
  const auto dir = vtpm::testing::test_dir("selftest-broken");
  std::filesystem::remove_all(dir);
  const auto rc = [](const std::vector<uint8_t>& r) { return proto::response_code(r); };
  ::setenv("VTPM_SHA256_OK", "1", 1);
  {
    StateStore store(dir.string(), TpmVersion::V2, /*create=*/true);
    TpmEngine engine(store);
    ASSERT_EQ(rc(engine.process(proto::startup_command(TpmVersion::V2, true))), 0u);
    ASSERT_EQ(rc(engine.process(proto::shutdown_state_command(TpmVersion::V2))), 0u);
  }
  ::unsetenv("VTPM_SHA256_OK");
  StateStore store(dir.string(), TpmVersion::V2, /*create=*/false);
  TpmEngine engine(store);
  ASSERT_EQ(rc(engine.process(proto::startup_command(TpmVersion::V2, false))), 0u);
  DeferredSelfTest g([&](std::span<const uint8_t> c) { return engine.process(c); });
  // Not failed yet: what fails is the test when it runs, not the power-on.
  const uint8_t no[] = {TPM2_NO};
  ASSERT_EQ(rc(g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_SelfTest, no))),
            TPM2_RC_TESTING);
  // Asked for the result: the rest of the test runs, SHA-256's fails, and that is the answer.
  const auto r = g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_GetTestResult, {}));
  const bool failed = rc(r) != TPM2_RC_SUCCESS ||
                      (r.size() >= 16 && proto::get_u32(r, r.size() - 4) != TPM2_RC_SUCCESS);
  EXPECT_TRUE(failed) << "GetTestResult says all is well";
  EXPECT_FALSE(g.pending());
  const uint8_t eight[] = {0, 8};
  EXPECT_EQ(rc(g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_GetRandom, eight))),
            TPM2_RC_FAILURE);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vtpm
