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

// Stops the emulator of one vTPM; false when its state must not be touched.
bool stop_emulator(const std::string& id, const VtpmRecord& v) {
  const auto holder = state_lock_holder(v.state_path);
  if (!holder) return true;  // already exited (it does when the container's init exits)
  if (*holder != v.emulator_pid) {
    spdlog::warn(
        "container {}: state dir {} is held by process {}, not by its emulator {}; leaving it", id,
        v.state_path, *holder, v.emulator_pid);
    return false;
  }
  if (!release_emulator(*holder, v.state_path, kStopGrace)) {
    spdlog::warn("container {}: emulator {} did not stop", id, *holder);
    return false;
  }
  return true;
}

}  // namespace

void run_hook_by_status(const std::string& state_json, const HookOptions& opts) {
  const std::string status = parse_oci_state(state_json).status;
  if (status == "creating" || status == "created") return run_setup(state_json, opts);
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
    const bool stopped = stop_emulator(state.id, v);
    if (stopped && v.state_path_managed) {
      // Only the TPM's own files, reached beneath the root setup checked: never anything else.
      try {
        if (v.state_root.empty())
          spdlog::warn("run record of {} names no state root; keeping {}", state.id, v.state_path);
        else if (!remove_state_dir(v.state_root, v.state_path))
          spdlog::warn("managed state {} holds other files; kept them", v.state_path);
      } catch (const Error& e) {
        spdlog::warn("cannot remove managed state {}: {}", v.state_path, e.what());
      }
    }
    spdlog::info("container {}: {} torn down (state {} {})", state.id, v.container_device,
                 v.state_path, v.state_path_managed && stopped ? "removed" : "kept");
  }
  // The emulators have left the container's cgroup now; the runtime's rmdir may have come first.
  remove_empty_cgroup(rec->cgroup);
  remove_run_record(opts.run_root, state.id);
}

}  // namespace vtpm
