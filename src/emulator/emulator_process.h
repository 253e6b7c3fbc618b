#pragma once
// Forks the detached emulator that serves one proxy device, and waits for it to be ready.
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/credentials.h"
#include "common/tpm_version.h"
#include "common/unique_fd.h"
#include "emulator/serve_loop.h"
#include "kernel/device_cgroup.h"
#include "kernel/vtpm_proxy.h"
#include "state/state_key.h"
#include "state/state_store.h"
#include "tpm/measure.h"

namespace vtpm {

// A launch to measure at power-on, before the device exists (docs/attestation.md): each event's
// digest per bank, extended into `pcr` in order. Once its TPM is started, the emulator names the
// banks it extends; the hook computes the digests of those (`digests`, in the hook) and sends
// them over.
struct LaunchMeasurement {
  unsigned pcr = 0;
  std::function<std::vector<EventDigests>(const std::vector<std::string>& banks)> digests;
};

// What one emulator needs to know; nothing of other TPMs.
struct EmulatorOptions {
  unsigned index = 0;  // for log lines
  TpmVersion version = TpmVersion::V2;
  std::string state_path;              // for messages: the state is reached through its fd
  std::vector<std::string> pcr_banks;  // empty keeps the TPM's banks
  bool close_platform = true;          // TPM 2: disable the platform hierarchy at power-on
  std::string container_id;
  std::string log_level;
  std::string log_file;  // where it logs, unless it has a log pipe
  int log_pipe = -1;     // write end (non-blocking) of a pipe its keeper relays: no log file then
  std::optional<Credentials> run_as;  // resolved by the hook, before anything was created
  std::optional<StateKey> key;        // this TPM's key only, read by the hook
  std::string vtpmx = "/dev/vtpmx";
  std::optional<LaunchMeasurement> measurement = {};
  bool resume = false;              // Startup(STATE): the container is restored from a checkpoint
  bool self_test_on_demand = true;  // TPM 2: see tpm/self_test.h; false: the full test first
  // Write end of a pipe its keeper watches: closed once the emulator no longer reads its proxy
  // fd (before it saves the state), so that the keeper answers the device's commands from then
  // on. -1: no keeper.
  int handoff_pipe = -1;
};

// What an emulator (or the provisioning child) does before libtpms reads a byte of the
// untrusted state: chroot into the state dir, become runAs, take the state's lock as that
// user, drop every capability, enter seccomp. Throws Error.
StateStore open_confined_state(UniqueFd dir_fd, const std::string& name, TpmVersion version,
                               std::optional<StateKey> key,
                               const std::optional<Credentials>& run_as);

// A running emulator. Unless released, the destructor stops it (undo on failed setup).
class EmulatorProcess {
 public:
  EmulatorProcess() = default;
  EmulatorProcess(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  EmulatorProcess(EmulatorProcess&& o) noexcept
      : pid_(std::exchange(o.pid_, 0)), pidfd_(std::move(o.pidfd_)) {}
  EmulatorProcess& operator=(EmulatorProcess&& o) noexcept {  // what this held goes with o
    std::swap(pid_, o.pid_);
    std::swap(pidfd_, o.pidfd_);
    return *this;
  }
  ~EmulatorProcess();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  int pidfd() const { return pidfd_.get(); }
  void release() { pid_ = 0; }

 private:
  pid_t pid_ = 0;
  UniqueFd pidfd_;
};

// Forks the emulator on the state directory dir_fd. It takes the state's lock, gives up its
// privileges (chroot to the state dir, runAs, no capabilities, seccomp), and only then lets
// libtpms load (or manufacture) the TPM, starts and self-tests it. Then the hook creates the
// proxy device and hands the server fd over (the kernel's first command finds the TPM ready).
// The emulator serves until the container's init exits or it is signalled, then saves the state
// and exits. Returns once it serves; throws Error with the
// child's own message otherwise.
// With `forked`, the emulator is that child of the template (emulator/template.h), which waits
// for its options: it gets them, and fds, over its socket; without, the hook forks it.
struct SpawnedEmulator {
  EmulatorProcess emulator;
  unsigned tpm_num = 0;
  UniqueFd server_fd;  // the hook's copy, for the keeper; the device lives while any is open
  std::vector<std::string> measured_banks = {};  // the banks the launch was measured into
};
struct ForkedChild {
  EmulatorProcess process;
  UniqueFd sock;         // the hook's end of the child's socket
  pid_t template_pid{};  // (for the log)
};
SpawnedEmulator spawn_emulator(const EmulatorOptions& opts, UniqueFd dir_fd, int container_pidfd,
                               std::optional<ForkedChild> forked = std::nullopt);

// A template's child, forked with its end of a socket from the hook (and nothing else: every
// other fd of the template is closed first): it waits for its options and fds (a hook that
// goes away ends it) and lives on as the emulator spawn_emulator forks (after reseeding its
// random number generators) or as the keeper spawn_keeper forks, whichever they name. Never
// returns.
[[noreturn]] void child_from_template(int sock);

struct KeeperOptions {
  std::string container_id;
  std::string log_level;
  std::string log_file;
  std::string empty_dir;  // its root: it opens nothing
  Credentials user;       // it runs as this unprivileged user
};

// Forks the container's keeper, which holds a copy of every server fd (devs) until the
// container's cgroup is empty (see keep_devices): a device number never reaches another TPM
// while a process of the container can still open its node, even if the emulator crashed or
// was killed. It holds nothing else but the cgroup watch's read-only files and the emulators'
// pidfds. Returns once it is sandboxed; throws Error otherwise.
void spawn_keeper(std::vector<KeptDevice> devs, const CgroupWatch& cgroup,
                  const KeeperOptions& opts);

// The same keeper from a template's child (cgroup v2), started early: it gets its options at
// once and sandboxes itself while the setup goes on, then its devices and the container's
// cgroup (hand_over, which returns once it holds them; throws Error otherwise). Gone before
// hand_over (a failed setup): it exits.
class PendingKeeper {
 public:
  PendingKeeper(ForkedChild child, const KeeperOptions& opts);
  void hand_over(std::span<const KeptDevice> devs, const CgroupWatch& cgroup);

 private:
  EmulatorProcess process_;  // (first: it goes after the socket, once it has seen the EOF)
  UniqueFd sock_;
  pid_t template_pid_;
};

// Asks the emulator whose pidfd this is to save its state and exit (SIGTERM) and waits until
// the pidfd says it exited; SIGKILL after grace. False if it still runs. Whether it holds its
// state's lock is not asked: code running inside it can close the lock and live on.
bool release_emulator(int pidfd, std::chrono::milliseconds grace);

// Waits until the kernel registered /dev/tpmN (+ tpmrmN), watching the emulator meanwhile.
HostDevices wait_for_registration(const EmulatorProcess& emu, unsigned tpm_num, TpmVersion v,
                                  std::chrono::milliseconds timeout);

}  // namespace vtpm
