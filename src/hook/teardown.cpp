#include <signal.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>

#include "common/error.h"
#include "common/process_util.h"
#include "emulator/emulator_process.h"
#include "hook/hooks.h"
#include "hook/run_record.h"
#include "kernel/device_cgroup.h"
#include "oci/oci_state.h"
#include "state/state_dir.h"
#include "state/state_store.h"

namespace vtpm {
namespace {

constexpr auto kStopGrace = std::chrono::seconds(10);

// Stops the emulator of one vTPM, confirmed by its pidfd to have exited; false when it still
// runs. Nothing is signalled that is not that emulator (open_recorded_emulator).
bool stop_emulator(const std::string& id, const VtpmRecord& v) {
  const UniqueFd emu = open_recorded_emulator(v);
  if (!emu) return true;  // already exited (it does when the container's init exits)
  if (release_emulator(emu.get(), kStopGrace)) return true;
  spdlog::warn("container {}: emulator {} did not exit", id, v.emulator_pid);
  return false;
}

// A managed state dir's TPM files and then the dir, once its emulator is gone: only the
// directory setup opened (device and inode), reached beneath the root setup checked, and not
// while another process holds its lock. Returns whether it went.
bool remove_managed_state(const std::string& id, const VtpmRecord& v) {
  if (v.state_root.empty()) {
    spdlog::warn("run record of {} names no state root; keeping {}", id, v.state_path);
    return false;
  }
  try {
    StateDir dir;
    try {
      dir = reopen_state_dir(v.state_root, v.state_path, v.state_dir);
    } catch (const SysError& e) {
      if (e.err == ENOENT) return true;  // gone already
      throw;
    }
    if (const auto holder = state_lock_holder(dir.fd.get())) {
      spdlog::warn(
          "container {}: state dir {} is held by process {}, not by its emulator; leaving it", id,
          v.state_path, *holder);
      return false;
    }
    if (remove_state_dir(v.state_root, v.state_path, dir.id)) return true;
    spdlog::warn("managed state {} holds other files; kept them", v.state_path);
  } catch (const Error& e) {
    spdlog::warn("container {}: {}; nothing of it removed", id, one_line(e.what()));
  }
  return false;
}

}  // namespace

void run_hook_by_status(const std::string& state_json, const HookOptions& opts) {
  const OciState state = parse_oci_state(state_json);
  const std::string& status = state.status;
  if (status == "creating" || status == "created") return run_setup(state_json, opts);
  // runc runs the prestart/createRuntime hooks of a restore with a stopped state and the
  // restored process's pid; a poststop hook's state has no pid, or one that is gone.
  if (status == "stopped" && state.pid && ::kill(*state.pid, 0) == 0)
    return run_setup(state_json, opts);
  if (status == "stopped") return run_teardown(state_json, opts);
  throw Error("OCI state: \"status\" is \"" + status +
              "\"; the hook runs at creating/created (setup) or stopped (teardown)");
}

void run_teardown(const std::string& state_json, const HookOptions& opts) {
  const OciState state = parse_oci_state(state_json);
  std::optional<RunRecord> rec;
  try {
    rec = read_run_record(opts.run_root, state.id);
  } catch (const Error& e) {
    // Nothing can be done with it, and a poststop hook must not fail a container that is gone.
    spdlog::warn("{}; removing it", e.what());
    remove_run_record(opts.run_root, state.id);
    return;
  }
  if (!rec) {
    spdlog::warn("no vTPM is recorded for container {}; nothing to tear down", state.id);
    return;
  }
  for (const auto& v : rec->vtpms) {
    bool stopped = false;
    try {
      stopped = stop_emulator(state.id, v);
    } catch (const Error& e) {
      spdlog::warn("container {}: emulator {}: {}", state.id, v.emulator_pid, one_line(e.what()));
    }
    const bool removed = stopped && v.state_path_managed && remove_managed_state(state.id, v);
    spdlog::info("container {}: {} torn down (state {} {})", state.id, v.container_device,
                 v.state_path, removed ? "removed" : "kept");
  }
  // The emulators have left the container's cgroup now; the runtime's rmdir may have come first.
  remove_empty_cgroup(rec->cgroup);
  remove_run_record(opts.run_root, state.id);
}

}  // namespace vtpm
