#pragma once
// Forks the detached emulator that serves one proxy device, and waits for it to be ready.
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "vtpm_hook/local_ca.h"
#include "vtpm_hook/sandbox.h"
#include "vtpm_hook/state_key.h"
#include "vtpm_hook/unique_fd.h"
#include "vtpm_hook/vtpm_proxy.h"
#include "vtpm_hook/vtpm_request.h"

namespace vtpm {

struct EmulatorOptions {
  VtpmSpec spec;
  std::string container_id;
  std::string log_level;
  std::string log_file;
  bool create_state_dir = true;
  std::optional<Credentials> run_as;  // resolved by the hook, before anything was created
  std::optional<StateKey> key;        // read by the hook, so the emulator needs no access
  const LocalCa* ca = nullptr;        // signs EK certificates (createCerts on a new TPM)
  std::string vtpmx = "/dev/vtpmx";
};

// A running emulator. Unless released, the destructor stops it (undo on failed setup).
class EmulatorProcess {
 public:
  EmulatorProcess() = default;
  EmulatorProcess(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  EmulatorProcess(EmulatorProcess&& o) noexcept
      : pid_(std::exchange(o.pid_, 0)), pidfd_(std::move(o.pidfd_)) {}
  EmulatorProcess& operator=(EmulatorProcess&&) = delete;
  ~EmulatorProcess();

  pid_t pid() const { return pid_; }
  void release() { pid_ = 0; }

 private:
  pid_t pid_ = 0;
  UniqueFd pidfd_;
};

// Forks the emulator, which loads (or manufactures and provisions) its TPM, starts it, and only
// then creates the proxy device (so the kernel's first command finds it ready), keeping the
// server fd to itself. Returns the emulator and the device's tpm number once it serves;
// throws Error with the child's own message otherwise.
std::pair<EmulatorProcess, unsigned> spawn_emulator(const EmulatorOptions& opts,
                                                    int container_pidfd);

// Waits until the kernel registered /dev/tpmN (+ tpmrmN), watching the emulator meanwhile.
HostDevices wait_for_registration(const EmulatorProcess& emu, unsigned tpm_num, TpmVersion v,
                                  std::chrono::milliseconds timeout);

struct StreamOptions {
  std::string state_dir;
  TpmVersion version = TpmVersion::V2;
  bool startup = true;
  std::vector<std::string> pcr_banks;
  std::optional<StateKey> key;
  const LocalCa* ca = nullptr;  // create EKs and certificates on a new TPM
};

// The body of `vtpm-hook emulate`: serves stdin/stdout until EOF or SIGTERM. Returns 0.
int run_stream_emulator(const StreamOptions& opts);

}  // namespace vtpm
