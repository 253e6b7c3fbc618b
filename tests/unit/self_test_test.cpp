// The self-test on demand with real libtpms: the kernel's SelfTest(NO) gets TESTING and runs
// nothing, every command before the test is served correctly, and a question about the test
// runs the rest of it first.
#include "tpm/self_test.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <array>
#include <cstdlib>
#include <filesystem>

#include "error_matchers.h"
#include "state/state_store.h"
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
uint32_t untested(TpmEngine& engine) {
  const uint8_t none[] = {0, 0, 0, 0};
  const auto r =
      engine.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_IncrementalSelfTest, none));
  EXPECT_EQ(proto::response_code(r), 0u);
  return r.size() >= proto::kHeaderSize + 4 ? proto::get_u32(r, proto::kHeaderSize) : 0;
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
// first: the result is the right one (here: SHA-256 of a PCR extend, checked with OpenSSL).
TEST_F(DeferredSelfTestTest, CommandsBeforeTheTestAreServedCorrectly) {
  auto g = gate();
  std::array<uint8_t, 32> d{};
  d.fill(0x5a);
  std::vector<uint8_t> params = {0, 0, 0, 1, 0x00, 0x0b};  // TPML_DIGEST_VALUES: one SHA-256
  params.resize(params.size() + d.size(), 0x5a);           // ...of d
  const std::array<uint32_t, 1> pcr16 = {16};
  ASSERT_EQ(rc(g.process(proto::password_session_command(TPM2_CC_PCR_Extend, pcr16, params))), 0u);
  // PCR_Read(sha256: PCR 16)
  const uint8_t sel[] = {0, 0, 0, 1, 0x00, 0x0b, 3, 0x00, 0x00, 0x01};
  const auto r = g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_PCR_Read, sel));
  ASSERT_EQ(rc(r), 0u);
  ASSERT_GE(r.size(), 30u + 32);
  // expected: SHA-256(32 zero bytes || d)
  std::array<uint8_t, 64> in{};
  std::copy(d.begin(), d.end(), in.begin() + 32);
  std::array<uint8_t, 32> want{};
  unsigned int n = 0;
  ASSERT_EQ(EVP_Digest(in.data(), in.size(), want.data(), &n, EVP_sha256(), nullptr), 1);
  EXPECT_TRUE(std::equal(want.begin(), want.end(), r.begin() + 30));
  EXPECT_TRUE(g.pending());  // nothing of that ran the full test
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
