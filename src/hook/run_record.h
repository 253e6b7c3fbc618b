#pragma once
// What setup leaves for teardown and status: <run-root>/<container id>.json.
#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/tpm_version.h"
#include "common/unique_fd.h"
#include "state/state_dir.h"

namespace vtpm {

struct VtpmRecord {
  unsigned index = 0;
  TpmVersion version = TpmVersion::V2;
  std::string state_path;
  std::string state_root;  // the allowed root state_path lies beneath
  bool state_path_managed = false;
  bool state_path_created = false;  // this setup made the directory
  // The directory setup opened: teardown, gc and status act on it only while the path still
  // names it. Unknown in records written before it was recorded.
  std::optional<DirId> state_dir;
  pid_t emulator_pid = 0;
  // When the emulator started (process_start_time): the pid and this name one process, where
  // the pid alone may be another's by now. 0: unknown (a record older than the field).
  unsigned long long emulator_start_time = 0;
  unsigned host_tpm_num = 0;
  std::string host_device;       // "/dev/tpm3" (the host's name for the chip)
  std::string container_device;  // "/dev/tpm0"
};

struct RunRecord {
  std::string container_id;
  std::string bundle;
  long long started_unix_ms = 0;
  std::vector<VtpmRecord> vtpms;
  std::string cgroup = {};  // v2: the container's cgroup the emulators were charged to, or ""
};

std::string run_record_path(const std::string& run_root, const std::string& id);
void write_run_record(const std::string& run_root, const RunRecord& rec);  // atomic
std::optional<RunRecord> read_run_record(const std::string& run_root, const std::string& id);
// Every record under run_root; unreadable ones are skipped with a warning.
std::vector<RunRecord> list_run_records(const std::string& run_root);
// Removes the record and its measurement logs.
void remove_run_record(const std::string& run_root, const std::string& id);

// The measured launch's event log of the container's vTPM `index`, kept beside its record
// (<run-root>/measurements/<id>/<index>.cel.json): the host's copy, which `vtpm-hook log` prints.
// (The container's is a copy in a tmpfs of its own: nothing done to it reaches this one.)
std::string measurement_log_path(const std::string& run_root, const std::string& id,
                                 unsigned index);
// Writes it (root's, 0444). Throws Error.
void write_measurement_log(const std::string& run_root, const std::string& id, unsigned index,
                           std::string_view text);
// A pidfd of the recorded emulator while it still runs; empty once it is gone. Its identity is
// confirmed before the pidfd is returned: the recorded start time, or (a record without one)
// the lock of its state dir, reached beneath the state root (and only in the recorded dir).
// Whether it holds its lock proves nothing else: code running inside it can close it and live on.
UniqueFd open_recorded_emulator(const VtpmRecord& v);
// Whether the recorded emulator still runs (open_recorded_emulator).
bool emulator_alive(const VtpmRecord& v);

}  // namespace vtpm
