#include "tpm/self_test.h"

#include <spdlog/spdlog.h>

#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

std::vector<uint8_t> self_test_command(bool full) {
  const uint8_t full_test[] = {full ? uint8_t{TPM2_YES} : uint8_t{TPM2_NO}};
  return proto::command(proto::kTpm2StNoSessions, TPM2_CC_SelfTest, full_test);
}

// TPM2_IncrementalSelfTest(toTest): the TPML_ALG to test; an empty one only asks what is left.
std::vector<uint8_t> incremental_command(std::optional<uint16_t> alg) {
  std::vector<uint8_t> list;
  proto::put_u32(list, alg ? 1 : 0);
  if (alg) proto::put_u16(list, *alg);
  return proto::command(proto::kTpm2StNoSessions, TPM2_CC_IncrementalSelfTest, list);
}

std::vector<uint8_t> get_test_result_command() {
  return proto::command(proto::kTpm2StNoSessions, TPM2_CC_GetTestResult, {});
}

// libtpms' TPM2_GetTestResult: header, outData (TPM2B, empty), testResult.
constexpr size_t kTestResultOffset = proto::kHeaderSize + 2;
// A runaway guard: libtpms implements a few dozen algorithms.
constexpr unsigned kMaxSlices = 256;

}  // namespace

std::vector<uint8_t> DeferredSelfTest::process(std::span<const uint8_t> command) {
  const auto hdr = proto::parse_header(command);
  if (!pending_ || !hdr) return backend_(command);
  if (hdr->code == TPM2_CC_SelfTest && command.size() == proto::kHeaderSize + 1) {
    if (command[proto::kHeaderSize] != TPM2_NO) {
      pending_ = false;  // fullTest YES: libtpms tests everything now; the caller waits for it
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

bool DeferredSelfTest::step() {
  if (!pending_) return false;
  const auto tested = next_;
  const auto r = backend_(incremental_command(tested));
  next_.reset();
  // toDoList: what is still untested, in libtpms' order
  if (proto::response_code(r) == TPM2_RC_SUCCESS && r.size() >= proto::kHeaderSize + 4 + 2 &&
      proto::get_u32(r, proto::kHeaderSize) > 0)
    next_ = proto::get_u16(r, proto::kHeaderSize + 4);
  // Done, failed (failure mode), or no progress: whatever is left, at once.
  if (!next_ || next_ == tested || ++slices_ > kMaxSlices) run();
  return pending_;
}

void DeferredSelfTest::run() {
  if (!pending_) return;
  pending_ = false;
  const uint32_t rc = proto::response_code(backend_(self_test_command(false)));
  if (rc != TPM2_RC_SUCCESS)
    spdlog::error("the TPM's self-test failed (rc 0x{:x}): it is in failure mode", rc);
  else
    spdlog::debug("background self-test passed ({} slices)", slices_);
}

}  // namespace vtpm
