#pragma once
// What setup leaves for teardown and status: <run-root>/<container id>.json.
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/tpm_version.h"
#include "common/unique_fd.h"

namespace vtpm {

struct VtpmRecord {
  unsigned index = 0;
  TpmVersion version = TpmVersion::V2;
  std::string state_path;
  std::string state_root;  // the allowed root state_path lies beneath
  bool state_path_managed = false;
  bool state_path_created = false;  // this setup made the directory
  pid_t emulator_pid = 0;
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
// Where a record was written: that file, not a later one of the same name.
struct RecordFile {
  UniqueFd dir;  // the run root, O_PATH
  std::string name;
  dev_t dev = 0;
  ino_t ino = 0;
};
RecordFile write_run_record(const std::string& run_root, const RunRecord& rec);  // atomic
std::optional<RunRecord> read_run_record(const std::string& run_root, const std::string& id);
// Every record under run_root; unreadable ones are skipped with a warning.
std::vector<RunRecord> list_run_records(const std::string& run_root);
void remove_run_record(const std::string& run_root, const std::string& id);
// Whether the recorded emulator still serves this vTPM: it holds its state dir's lock for as
// long as it lives (a pid alone may have been reused).
bool emulator_alive(const VtpmRecord& v);

}  // namespace vtpm
