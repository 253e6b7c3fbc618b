#include "tpm/self_test.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

std::vector<uint8_t> self_test_command(bool full) {
  const uint8_t full_test[] = {full ? uint8_t{TPM2_YES} : uint8_t{TPM2_NO}};
  return proto::command(proto::kTpm2StNoSessions, TPM2_CC_SelfTest, full_test);
}

std::vector<uint8_t> get_test_result_command() {
  return proto::command(proto::kTpm2StNoSessions, TPM2_CC_GetTestResult, {});
}

// libtpms' TPM2_GetTestResult: header, outData (TPM2B, empty), testResult.
constexpr size_t kTestResultOffset = proto::kHeaderSize + 2;

}  // namespace

std::vector<uint8_t> DeferredSelfTest::process(std::span<const uint8_t> command) {
  const auto hdr = proto::parse_header(command);
  if (!pending_ || !hdr) return backend_(command);
  if (hdr->code == TPM2_CC_SelfTest && command.size() == proto::kHeaderSize + 1) {
    if (command[proto::kHeaderSize] != TPM2_NO) {
      run();  // fullTest YES: the caller waits for it, as the command says
      return backend_(command);
    }
  } else if (hdr->code != TPM2_CC_GetTestResult) {
    return backend_(command);
  }
  // SelfTest(NO) or GetTestResult while the test is pending. A TPM in failure mode says so.
  auto result = backend_(get_test_result_command());
  if (proto::response_code(result) != TPM2_RC_SUCCESS || result.size() < kTestResultOffset + 4 ||
      proto::get_u32(result, kTestResultOffset) != TPM2_RC_SUCCESS)
    return hdr->code == TPM2_CC_GetTestResult
               ? result
               : proto::make_response(TpmVersion::V2, proto::kTpm2RcFailure);
  if (hdr->code == TPM2_CC_SelfTest) return proto::make_response(TpmVersion::V2, TPM2_RC_TESTING);
  std::vector<uint8_t> r;  // success, outData empty, testResult TESTING
  proto::put_u16(r, proto::kTpm2StNoSessions);
  proto::put_u32(r, kTestResultOffset + 4);
  proto::put_u32(r, TPM2_RC_SUCCESS);
  proto::put_u16(r, 0);
  proto::put_u32(r, TPM2_RC_TESTING);
  return r;
}

void DeferredSelfTest::run() {
  if (!pending_) return;
  pending_ = false;
  const auto t0 = std::chrono::steady_clock::now();
  const uint32_t rc = proto::response_code(backend_(self_test_command(true)));
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  if (rc != TPM2_RC_SUCCESS)
    spdlog::error("the TPM's self-test failed (rc 0x{:x}): it is in failure mode", rc);
  else
    spdlog::debug("background self-test passed in {} ms", ms);
}

}  // namespace vtpm
