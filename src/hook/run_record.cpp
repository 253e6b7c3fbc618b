#include "hook/run_record.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/io_util.h"
#include "common/process_util.h"
#include "state/state_store.h"

namespace vtpm {
namespace {

nlohmann::json to_json(const VtpmRecord& v) {
  nlohmann::json j = {{"index", v.index},
                      {"vtpmVersion", to_string(v.version)},
                      {"statePath", v.state_path},
                      {"stateRoot", v.state_root},
                      {"statePathIsManaged", v.state_path_managed},
                      {"statePathCreated", v.state_path_created},
                      {"emulatorPid", v.emulator_pid},
                      {"hostTpmNum", v.host_tpm_num},
                      {"hostDevice", v.host_device},
                      {"containerDevice", v.container_device}};
  if (v.state_dir) {
    j["stateDirDev"] = static_cast<uint64_t>(v.state_dir->dev);
    j["stateDirIno"] = static_cast<uint64_t>(v.state_dir->ino);
  }
  if (v.emulator_start_time) j["emulatorStartTime"] = v.emulator_start_time;
  return j;
}

VtpmRecord vtpm_from_json(const nlohmann::json& j) {
  VtpmRecord v;
  v.index = j.at("index").get<unsigned>();
  const auto version = parse_tpm_version(j.at("vtpmVersion").get<std::string>());
  if (!version) throw Error("unknown vtpmVersion " + j.at("vtpmVersion").dump());
  v.version = *version;
  v.state_path = j.at("statePath").get<std::string>();
  v.state_root = j.value("stateRoot", "");
  v.state_path_managed = j.at("statePathIsManaged").get<bool>();
  v.state_path_created = j.value("statePathCreated", false);
  if (j.contains("stateDirDev") || j.contains("stateDirIno"))
    v.state_dir = DirId{static_cast<dev_t>(j.at("stateDirDev").get<uint64_t>()),
                        static_cast<ino_t>(j.at("stateDirIno").get<uint64_t>())};
  v.emulator_pid = j.at("emulatorPid").get<pid_t>();
  v.emulator_start_time = j.value("emulatorStartTime", 0ULL);
  v.host_tpm_num = j.at("hostTpmNum").get<unsigned>();
  v.host_device = j.at("hostDevice").get<std::string>();
  v.container_device = j.at("containerDevice").get<std::string>();
  return v;
}

// Empty when no process has that pid.
UniqueFd pidfd_if_running(pid_t pid) {
  UniqueFd fd(::pidfd_open(pid, 0));
  if (!fd && errno != ESRCH) throw sys_error("pidfd_open(" + std::to_string(pid) + ")");
  return fd;
}

}  // namespace

std::string run_record_path(const std::string& run_root, const std::string& id) {
  return run_root + "/" + id + ".json";
}

void write_run_record(const std::string& run_root, const RunRecord& rec) {
  std::error_code ec;
  std::filesystem::create_directories(run_root, ec);
  if (ec) throw Error("cannot create run root " + run_root + ": " + ec.message());
  nlohmann::json j = {{"containerId", rec.container_id},
                      {"bundle", rec.bundle},
                      {"cgroup", rec.cgroup},
                      {"startedUnixMs", rec.started_unix_ms},
                      {"vtpms", nlohmann::json::array()}};
  for (const auto& v : rec.vtpms) j["vtpms"].push_back(to_json(v));
  const std::string path = run_record_path(run_root, rec.container_id);
  const std::string text = j.dump(2) + "\n";
  write_file_atomic(path, std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

std::optional<RunRecord> read_run_record(const std::string& run_root, const std::string& id) {
  const std::string path = run_record_path(run_root, id);
  std::string text;
  try {
    text = read_file(path);
  } catch (const SysError&) {
    return std::nullopt;  // none (an unreadable one is left alone, as before)
  }
  return with_context("run record " + path + " is corrupt", [&] {  // nlohmann's errors or ours
    const auto j = nlohmann::json::parse(text);
    RunRecord rec;
    rec.container_id = j.at("containerId").get<std::string>();
    rec.bundle = j.value("bundle", "");
    rec.cgroup = j.value("cgroup", "");
    rec.started_unix_ms = j.value("startedUnixMs", 0LL);
    for (const auto& v : j.at("vtpms")) rec.vtpms.push_back(vtpm_from_json(v));
    return std::optional<RunRecord>(std::move(rec));
  });
}

std::vector<RunRecord> list_run_records(const std::string& run_root) {
  std::vector<RunRecord> out;
  std::error_code ec;
  // No run root yet (ec) is no record: nothing was ever set up here.
  for (const auto& e : std::filesystem::directory_iterator(run_root, ec)) {
    const auto name = e.path().filename().string();
    if (!name.ends_with(".json")) continue;
    try {
      if (auto r = read_run_record(run_root, name.substr(0, name.size() - 5))) out.push_back(*r);
    } catch (const Error& err) {
      spdlog::warn("{}", err.what());
    }
  }
  std::sort(out.begin(), out.end(),
            [](const RunRecord& a, const RunRecord& b) { return a.container_id < b.container_id; });
  return out;
}

namespace {

std::string measurement_dir(const std::string& run_root, const std::string& id) {
  return run_root + "/measurements/" + id;
}

}  // namespace

void remove_run_record(const std::string& run_root, const std::string& id) {
  const std::string path = run_record_path(run_root, id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw sys_error("remove " + path);
  std::error_code ec;
  std::filesystem::remove_all(measurement_dir(run_root, id), ec);  // symlinks are not followed
  if (ec) throw Error("remove " + measurement_dir(run_root, id) + ": " + ec.message());
}

std::string measurement_log_path(const std::string& run_root, const std::string& id,
                                 unsigned index) {
  return measurement_dir(run_root, id) + "/" + std::to_string(index) + ".cel.json";
}

void write_measurement_log(const std::string& run_root, const std::string& id, unsigned index,
                           std::string_view text) {
  const std::string dir = measurement_dir(run_root, id);
  std::error_code ec;
  std::filesystem::create_directories(run_root + "/measurements", ec);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw sys_error("create " + dir);
  const std::string path = measurement_log_path(run_root, id, index);
  (void)::unlink(path.c_str());  // a log of an earlier start goes: this start's is new
  // Readable by every user (0444 whatever the umask); written once.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444));
  if (!fd || ::fchmod(fd.get(), 0444) != 0) throw sys_error("create " + path);
  write_all(fd.get(), std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()), path);
}

UniqueFd open_recorded_emulator(const VtpmRecord& v) {
  if (v.emulator_pid <= 0) return {};
  if (v.emulator_start_time) {
    // The pidfd first: a start time that matches after it was opened proves it is that process.
    UniqueFd fd = pidfd_if_running(v.emulator_pid);
    if (!fd || process_start_time(v.emulator_pid) != v.emulator_start_time) return {};
    return fd;
  }
  // An older record: the emulator was the one holding its state's lock (and one that closed
  // it is not found). Without a root the directory cannot be reached safely: nothing is.
  if (v.state_root.empty()) return {};
  try {
    const StateDir dir = reopen_state_dir(v.state_root, v.state_path, v.state_dir);
    if (state_lock_holder(dir.fd.get()) != v.emulator_pid) return {};
    UniqueFd fd = pidfd_if_running(v.emulator_pid);
    // Still the holder once the pidfd is open: the pidfd is that process.
    if (!fd || state_lock_holder(dir.fd.get()) != v.emulator_pid) return {};
    return fd;
  } catch (const Error& e) {
    spdlog::debug("emulator {} of {}: {}", v.emulator_pid, v.state_path, e.what());
    return {};
  }
}

bool emulator_alive(const VtpmRecord& v) {
  try {
    return static_cast<bool>(open_recorded_emulator(v));
  } catch (const Error& e) {
    spdlog::warn("emulator {} of {}: {}", v.emulator_pid, v.state_path, e.what());
    return false;
  }
}

}  // namespace vtpm
