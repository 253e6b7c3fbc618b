#pragma once
// A TPM 2 whose self-test never sits on the container's critical path. TPM 2.0 Part 3
// (TPM2_SelfTest) lets a TPM answer TPM2_SelfTest(NO) with TPM_RC_TESTING, and Linux takes that
// as success when it registers the device: the kernel's one SelfTest(NO) gets that answer instead
// of a full test (~0.4 s under the test VM's emulation). From then on every algorithm is tested
// just before its first use, by libtpms itself (its TEST() macros, SELF_TEST on in 0.9), so no
// command is served by an untested algorithm, and a failing test puts the TPM into failure mode.
// The rest is tested when someone asks: a later TPM2_SelfTest or TPM2_GetTestResult first runs
// every test not yet run, then libtpms answers, so the answer is the truth.
// Why not test in the background: under 50 concurrent setups on 2 emulated CPUs, a command
// waiting behind a background test slice exceeded the kernel's 2 s command time-out, and a
// registration stalled past 30 s (the hardening suite); tests on demand cost no one anything.
// Never TESTING to another command: the kernel retries those for 2.5 s with the chip's locks held.
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace vtpm {

class DeferredSelfTest {
 public:
  using Backend = std::function<std::vector<uint8_t>(std::span<const uint8_t>)>;

  // backend: libtpms, started (TPM2_Startup done) but not self-tested.
  explicit DeferredSelfTest(Backend backend) : backend_(std::move(backend)) {}

  // Whether tests remain that nobody asked for yet.
  bool pending() const { return pending_; }

  // A command on its way to libtpms. The first TPM2_SelfTest(NO) (the kernel's, while it
  // registers the device) is answered TPM_RC_TESTING (a TPM already in failure mode says so
  // instead); a later TPM2_SelfTest or a TPM2_GetTestResult first runs what is left. Everything
  // else goes to libtpms.
  std::vector<uint8_t> process(std::span<const uint8_t> command);

  // Every test not yet run, now. Afterwards libtpms answers everything itself.
  void run();

 private:
  Backend backend_;
  bool pending_ = true;
  bool registered_ = false;  // the driver's SelfTest(NO) has had its TESTING
};

// The algorithms libtpms has not tested yet (TPM2_IncrementalSelfTest with an empty toTest list,
// which tests nothing and returns the toDoList). Empty on any error.
std::vector<uint16_t> untested_algorithms(const DeferredSelfTest::Backend& backend);

}  // namespace vtpm
