#include "tpm/self_test.h"

#include <spdlog/spdlog.h>

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
  const bool self_test = hdr->code == TPM2_CC_SelfTest && command.size() == proto::kHeaderSize + 1;
  if (!self_test && hdr->code != TPM2_CC_GetTestResult) return backend_(command);
  if (self_test && command[proto::kHeaderSize] != TPM2_NO) {
    pending_ = false;  // fullTest YES: libtpms tests everything now; the caller waits for it
    return backend_(command);
  }
  if (self_test && !registered_) {
    registered_ = true;
    // The driver's SelfTest(NO). A TPM in failure mode says so.
    const auto result = backend_(get_test_result_command());
    if (proto::response_code(result) != TPM2_RC_SUCCESS || result.size() < kTestResultOffset + 4 ||
        proto::get_u32(result, kTestResultOffset) != TPM2_RC_SUCCESS)
      return proto::make_response(TpmVersion::V2, proto::kTpm2RcFailure);
    return proto::make_response(TpmVersion::V2, TPM2_RC_TESTING);
  }
  run();  // asked about the tests: they are all run before the answer
  return backend_(command);
}

void DeferredSelfTest::run() {
  if (!pending_) return;
  pending_ = false;
  const uint32_t rc = proto::response_code(backend_(self_test_command(false)));
  if (rc != TPM2_RC_SUCCESS)
    spdlog::error("the TPM's self-test failed (rc 0x{:x}): it is in failure mode", rc);
  else
    spdlog::debug("the rest of the self-test passed");
}

std::vector<uint16_t> untested_algorithms(const DeferredSelfTest::Backend& backend) {
  const uint8_t none[] = {0, 0, 0, 0};  // TPML_ALG, count 0
  const auto r =
      backend(proto::command(proto::kTpm2StNoSessions, TPM2_CC_IncrementalSelfTest, none));
  std::vector<uint16_t> algs;
  if (proto::response_code(r) != TPM2_RC_SUCCESS || r.size() < proto::kHeaderSize + 4) return algs;
  const uint32_t n = proto::get_u32(r, proto::kHeaderSize);
  for (size_t off = proto::kHeaderSize + 4; algs.size() < n && off + 2 <= r.size(); off += 2)
    algs.push_back(proto::get_u16(r, off));
  return algs;
}

}  // namespace vtpm
