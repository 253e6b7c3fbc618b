// The background self-test with real libtpms: SelfTest(NO) and GetTestResult tell the truth
// while it is pending, every command before it is served correctly, and it completes.
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

TEST_F(DeferredSelfTestTest, PendingUntilTheLastSliceThenLibtpmsAnswers) {
  auto g = gate();
  EXPECT_TRUE(g.pending());
  EXPECT_EQ(rc(g.process(self_test(false))), TPM2_RC_TESTING);  // the kernel takes it as success
  EXPECT_EQ(test_result(g), TPM2_RC_TESTING);
  // One algorithm per slice; between slices the TPM still says it is testing, and serves.
  int slices = 0;
  for (bool more = true; more && slices < 1000; ++slices) {
    more = g.step();
    if (more) {
      EXPECT_EQ(test_result(g), TPM2_RC_TESTING) << "after slice " << slices;
      const uint8_t eight[] = {0, 8};
      EXPECT_EQ(rc(g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_GetRandom, eight))),
                0u);
    }
  }
  EXPECT_GT(slices, 10);  // libtpms 0.9 implements a few dozen algorithms
  EXPECT_LT(slices, 1000);
  EXPECT_FALSE(g.pending());
  EXPECT_FALSE(g.step());
  // libtpms itself has nothing left to test: IncrementalSelfTest's toDoList is empty.
  const uint8_t none[] = {0, 0, 0, 0};
  const auto todo =
      g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_IncrementalSelfTest, none));
  ASSERT_EQ(rc(todo), 0u);
  EXPECT_EQ(proto::get_u32(todo, proto::kHeaderSize), 0u);
  EXPECT_EQ(test_result(g), TPM2_RC_SUCCESS);
  EXPECT_EQ(rc(g.process(self_test(false))), TPM2_RC_SUCCESS);
}

TEST_F(DeferredSelfTestTest, RunFinishesWhatIsLeft) {
  auto g = gate();
  EXPECT_TRUE(g.step());
  g.run();
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
  EXPECT_EQ(test_result(g), TPM2_RC_TESTING);
}

// Run by ctest emulator.selftest_broken_sha256 under the broken_sha256 shim (LD_PRELOAD), which
// flips a bit of every SHA-256 digest unless VTPM_SHA256_OK is set. A TPM made with working
// SHA-256 is powered on again with it broken: the slice that tests SHA-256 (or the first that
// uses it) puts the TPM into failure mode, the test stops, and from then on libtpms answers
// every command with its failure, GetTestResult included, as after a failed eager test.
TEST(DeferredSelfTestBroken, AFailingSlicePutsTheTpmIntoFailureMode) {
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
  // Not failed yet: what fails is a slice, not the power-on.
  const uint8_t no[] = {TPM2_NO};
  ASSERT_EQ(rc(g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_SelfTest, no))),
            TPM2_RC_TESTING);
  int slices = 0;
  while (g.step() && slices < 1000) ++slices;
  EXPECT_FALSE(g.pending());
  const uint8_t eight[] = {0, 8};
  EXPECT_EQ(rc(g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_GetRandom, eight))),
            TPM2_RC_FAILURE);
  const auto r = g.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_GetTestResult, {}));
  const bool failed = rc(r) != TPM2_RC_SUCCESS ||
                      (r.size() >= 16 && proto::get_u32(r, r.size() - 4) != TPM2_RC_SUCCESS);
  EXPECT_TRUE(failed) << "GetTestResult says all is well";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vtpm
