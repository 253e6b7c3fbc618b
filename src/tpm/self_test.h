#pragma once
// A TPM 2 that runs its self-test in the background, as TPM 2.0 Part 3 (TPM2_SelfTest)
// allows: the kernel's TPM2_SelfTest(NO) while registering the device is answered
// TPM_RC_TESTING (the driver takes that as success) instead of testing every algorithm on the
// critical path of the container's start. The test then runs one algorithm at a time
// (TPM2_IncrementalSelfTest) between commands, so no command waits for more than one slice:
// the kernel reads random bytes from a TPM while it registers the next one, and a TPM busy with
// a whole test for seconds on a loaded host stalled those registrations.
// Correctness does not rest on it: libtpms tests each algorithm before its first use (its TEST()
// macros, SELF_TEST on in 0.9), so no command is served by an untested algorithm, and a failing
// test puts the TPM into failure mode either way. What this class adds is the truth about it.
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

namespace vtpm {

class DeferredSelfTest {
 public:
  using Backend = std::function<std::vector<uint8_t>(std::span<const uint8_t>)>;

  // backend: libtpms, started (TPM2_Startup done) but not self-tested.
  explicit DeferredSelfTest(Backend backend) : backend_(std::move(backend)) {}

  bool pending() const { return pending_; }

  // A command on its way to libtpms. While the test is pending: TPM2_SelfTest(NO) is answered
  // TPM_RC_TESTING and TPM2_GetTestResult reports TPM_RC_TESTING (unless the TPM is in failure
  // mode: then libtpms' own answers); TPM2_SelfTest(YES) runs the rest of the test now.
  // Everything else goes to libtpms.
  std::vector<uint8_t> process(std::span<const uint8_t> command);

  // One slice: tests the next untested algorithm. Returns whether any test is still pending.
  bool step();

  // The rest of the test, now. Afterwards libtpms answers everything itself.
  void run();

 private:
  void finish();

  Backend backend_;
  bool pending_ = true;
  std::optional<uint16_t> next_;  // the algorithm the next slice tests (none: ask libtpms)
  unsigned slices_ = 0;
};

}  // namespace vtpm
