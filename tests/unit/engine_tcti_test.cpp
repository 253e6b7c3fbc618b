// The TCTI over the in-process engine: tpm2-tss's receive protocol (size query, a buffer too
// small, calls out of sequence) and SAPI on top of it, against real libtpms.
#include "tpm/engine_tcti.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "error_matchers.h"
#include "state/state_store.h"
#include "tpm/sapi.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

using Bytes = std::vector<uint8_t>;
using vtpm::testing::expect_error;

const Bytes kGetRandom8 = {0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x7b, 0x00, 0x08};

class EngineTctiTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(dir_); }
  const std::filesystem::path dir_ = vtpm::testing::test_dir("tcti");
};

TEST_F(EngineTctiTest, ReceiveProtocol) {
  const StateStore store(dir_.string(), TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  EngineTcti tcti(engine);
  TSS2_TCTI_CONTEXT* c = tcti.get();
  size_t size = 0;
  uint8_t buf[64];
  // Nothing sent yet: nothing to receive.
  EXPECT_EQ(Tss2_Tcti_Receive(c, &size, buf, 0), TSS2_TCTI_RC_BAD_SEQUENCE);
  EXPECT_EQ(Tss2_Tcti_Receive(c, nullptr, buf, 0), TSS2_TCTI_RC_BAD_REFERENCE);
  const Bytes startup = proto::startup_command(TpmVersion::V2, /*clear=*/true);
  ASSERT_EQ(Tss2_Tcti_Transmit(c, startup.size(), startup.data()), TSS2_RC_SUCCESS);
  // A second command before the response was taken.
  EXPECT_EQ(Tss2_Tcti_Transmit(c, startup.size(), startup.data()), TSS2_TCTI_RC_BAD_SEQUENCE);
  EXPECT_EQ(Tss2_Tcti_SetLocality(c, 1), TSS2_TCTI_RC_BAD_SEQUENCE);
  // Size query: the size, and the response stays.
  ASSERT_EQ(Tss2_Tcti_Receive(c, &size, nullptr, 0), TSS2_RC_SUCCESS);
  EXPECT_EQ(size, proto::kHeaderSize);
  size = 4;
  EXPECT_EQ(Tss2_Tcti_Receive(c, &size, buf, 0), TSS2_TCTI_RC_INSUFFICIENT_BUFFER);
  EXPECT_EQ(size, proto::kHeaderSize);  // what it needs
  size = sizeof buf;
  ASSERT_EQ(Tss2_Tcti_Receive(c, &size, buf, 0), TSS2_RC_SUCCESS);
  EXPECT_EQ(Bytes(buf, buf + size), proto::make_response(TpmVersion::V2, 0));
  // Taken: a second receive is out of sequence, the next transmit is fine.
  EXPECT_EQ(Tss2_Tcti_Receive(c, &size, buf, 0), TSS2_TCTI_RC_BAD_SEQUENCE);
  ASSERT_EQ(Tss2_Tcti_Transmit(c, kGetRandom8.size(), kGetRandom8.data()), TSS2_RC_SUCCESS);
  size = sizeof buf;
  ASSERT_EQ(Tss2_Tcti_Receive(c, &size, buf, 0), TSS2_RC_SUCCESS);
  EXPECT_EQ(size, 20u);  // header, TPM2B_DIGEST of 8 bytes
  EXPECT_EQ(proto::response_code(Bytes(buf, buf + size)), 0u);
  EXPECT_EQ(Tss2_Tcti_Cancel(c), TSS2_TCTI_RC_NOT_IMPLEMENTED);
}

TEST_F(EngineTctiTest, ForeignContextIsRefused) {
  TSS2_TCTI_CONTEXT_COMMON_V2 other{};
  other.v1.version = 2;
  auto* c = reinterpret_cast<TSS2_TCTI_CONTEXT*>(&other);
  const StateStore store(dir_.string(), TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  EngineTcti tcti(engine);
  // Our functions called with a context that is not ours (the magic does not match).
  other.v1.transmit = reinterpret_cast<TSS2_TCTI_CONTEXT_COMMON_V2*>(tcti.get())->v1.transmit;
  other.v1.receive = reinterpret_cast<TSS2_TCTI_CONTEXT_COMMON_V2*>(tcti.get())->v1.receive;
  size_t size = 0;
  EXPECT_EQ(other.v1.transmit(c, kGetRandom8.size(), kGetRandom8.data()), TSS2_TCTI_RC_BAD_CONTEXT);
  EXPECT_EQ(other.v1.receive(c, &size, nullptr, 0), TSS2_TCTI_RC_BAD_CONTEXT);
}

// SAPI on top: a TPM error keeps its number in the message (e2e tests grep for it).
TEST_F(EngineTctiTest, SapiCommandsAndErrors) {
  const StateStore store(dir_.string(), TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  Sapi sapi(engine);
  // A fresh TPM has nothing to resume: TPM_RC_VALUE + parameter 1.
  expect_error([&] { check(Tss2_Sys_Startup(sapi.get(), TPM2_SU_STATE), "TPM2_Startup"); },
               {"TPM2_Startup failed with TPM rc 0x1c4"});
  check(Tss2_Sys_Startup(sapi.get(), TPM2_SU_CLEAR), "TPM2_Startup");
  EXPECT_EQ(Tss2_Sys_Startup(sapi.get(), TPM2_SU_CLEAR), TPM2_RC_INITIALIZE);
  TPM2B_DIGEST random{};
  check(Tss2_Sys_GetRandom(sapi.get(), nullptr, 8, &random, nullptr), "TPM2_GetRandom");
  EXPECT_EQ(random.size, 8u);
  // An authorized command with the password session: PCR_Extend(16).
  TPML_DIGEST_VALUES v{};
  v.count = 1;
  v.digests[0].hashAlg = TPM2_ALG_SHA256;
  check(Tss2_Sys_PCR_Extend(sapi.get(), 16, Sapi::password(), &v, nullptr), "TPM2_PCR_Extend");
}

TEST_F(EngineTctiTest, SapiIsTpm2Only) {
  const StateStore store(dir_.string(), TpmVersion::V1_2, /*create=*/true);
  TpmEngine engine(store);
  expect_error([&] { Sapi sapi(engine); }, {"TPM 2 only"});
}

}  // namespace
}  // namespace vtpm
