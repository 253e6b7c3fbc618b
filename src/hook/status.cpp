#include "hook/status.h"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include <ctime>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "hook/ek_export.h"
#include "hook/run_record.h"
#include "state/state_dir.h"

namespace vtpm {
namespace {

std::string iso_time(long long unix_ms) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

std::string render_status(const std::string& run_root, bool json) {
  nlohmann::json rows = nlohmann::json::array();
  std::string table =
      fmt::format("{:<24} {:<12} {:<14} {:>8} {:<6} {:<7} {:<20} {}\n", "CONTAINER", "HOST DEVICE",
                  "IN CONTAINER", "PID", "TPM", "ALIVE", "STARTED", "STATE");
  for (const auto& rec : list_run_records(run_root)) {
    for (const auto& v : rec.vtpms) {
      const bool alive = emulator_alive(v);
      nlohmann::json eks = nlohmann::json::array();
      try {
        (void)reopen_state_dir(v.state_root, v.state_path, v.state_dir);  // still setup's dir
        for (const auto& c : read_ek_certificates(v.state_root, v.state_path))
          eks.push_back(
              {{"type", c.rsa ? "rsa" : "ecc"}, {"publicKeySha256", c.public_key_sha256}});
      } catch (const Error& e) {  // a status row is still worth printing without it
        spdlog::warn("EK certificates of {}: {}", v.state_path, e.what());
      }
      rows.push_back({{"containerId", rec.container_id},
                      {"hostDevice", v.host_device},
                      {"containerDevice", v.container_device},
                      {"emulatorPid", v.emulator_pid},
                      {"alive", alive},
                      {"vtpmVersion", to_string(v.version)},
                      {"statePath", v.state_path},
                      {"started", iso_time(rec.started_unix_ms)},
                      {"ek", eks}});
      // Records are the hook's, but their strings came from configs: one row stays one row.
      table +=
          fmt::format("{:<24} {:<12} {:<14} {:>8} {:<6} {:<7} {:<20} {}\n",
                      one_line(rec.container_id), one_line(v.host_device),
                      one_line(v.container_device), v.emulator_pid, to_string(v.version),
                      alive ? "yes" : "no", iso_time(rec.started_unix_ms), one_line(v.state_path));
    }
  }
  return json ? rows.dump(2) + "\n" : table;
}

}  // namespace vtpm
