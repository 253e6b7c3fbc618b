#include "hook/gc.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <vector>

#include "common/error.h"
#include "hook/run_record.h"
#include "oci/oci_state.h"
#include "oci/vtpm_request.h"
#include "state/state_dir.h"
#include "state/state_store.h"

namespace vtpm {
namespace {

using Clock = std::chrono::system_clock;

// "<id>" or "<id>@tpm<i>" -> "<id>"; nullopt for any other name.
std::optional<std::string> default_state_owner(const std::string& name) {
  std::string id = name;
  if (const auto at = name.rfind("@tpm"); at != std::string::npos) {
    const std::string n = name.substr(at + 4);
    if (n.empty() || n.size() > 3 || n.front() == '0' ||
        !std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::nullopt;
    id = name.substr(0, at);
  }
  try {
    validate_container_id(id);
  } catch (const Error&) {
    return std::nullopt;
  }
  return id;
}

// The directories of `dir` gc may look at, sorted; not links, not the reserved ones.
void add_candidates(const std::string& dir, const std::set<std::string>& reserved,
                    std::vector<std::string>& out) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return;
    throw Error("cannot list " + dir + ": " + ec.message());
  }
  for (const auto& e : it) {
    const std::string path = dir + "/" + e.path().filename().string();
    if (!e.is_directory(ec) || e.is_symlink(ec) || reserved.count(path)) continue;
    out.push_back(path);
  }
}

// The state root's default state dirs, and those of Kubernetes containers beneath
// <root>/kubernetes (policy kubernetesIdentity); not the CA's.
std::vector<std::string> candidates(const std::string& root, std::set<std::string> reserved) {
  std::vector<std::string> out;
  const std::string k8s = root + "/" + kKubernetesStateDir;
  reserved.insert(k8s);
  add_candidates(root, reserved, out);
  if (std::filesystem::is_directory(std::filesystem::symlink_status(k8s)))
    add_candidates(k8s, reserved, out);
  std::sort(out.begin(), out.end());
  return out;
}

Clock::time_point mtime_of(const struct stat& st) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
}

class Collector {
 public:
  Collector(const HookOptions& opts, const GcOptions& gc, std::ostream& out)
      : opts_(opts), gc_(gc), out_(out), now_(Clock::now()) {
    for (const auto& rec : list_run_records(opts.run_root)) {
      if (stale(rec) && drop_record(rec)) continue;  // its state is a candidate like any other
      live_ids_.insert(rec.container_id);
      for (const auto& v : rec.vtpms) {
        live_paths_.insert(v.state_path);
        // the same directory by another name (a bind-mounted policy root)
        if (v.state_dir) live_dirs_.insert({v.state_dir->dev, v.state_dir->ino});
      }
    }
  }

  // How many stale run records could not be removed (logged).
  unsigned record_failures() const { return record_failures_; }

  // Returns false when the directory could not be examined or removed (logged).
  bool visit(const std::string& path) {
    std::string name = path.substr(opts_.state_root.size() + 1);
    // A Kubernetes container's: <namespace>_<pod>_<container>, which is id-shaped too.
    if (name.starts_with(std::string(kKubernetesStateDir) + "/"))
      name = name.substr(std::string(kKubernetesStateDir).size() + 1);
    const auto id = default_state_owner(name);
    if (!id) return skip(path, "not named <container id>[@tpm<i>]");
    if (in_use(path, *id)) return skip(path, "named by the run record of container " + *id);
    try {
      StateDir dir = open_state_dir(opts_.state_root, path, /*create=*/false);
      struct stat dir_st {};
      if (::fstat(dir.fd.get(), &dir_st) != 0) throw sys_error("stat " + path);
      const auto dir_time = mtime_of(dir_st);
      if (live_dirs_.count({dir.id.dev, dir.id.ino}))
        return skip(path, "the directory a run record names");
      if (!holds_only_tpm_files(dir.fd.get())) return skip(path, "holds files that are no TPM's");
      if (recently_used(dir.fd.get(), dir_time)) return skip(path, "used recently");
      if (const auto pid = state_lock_holder(dir.fd.get()))
        return skip(path, "locked by process " + std::to_string(*pid));
      if (gc_.dry_run) return report(path);
      // Locked from here until it is gone: an emulator that starts on it now fails to lock.
      const bool had_lock_file = ::faccessat(dir.fd.get(), ".lock", F_OK, AT_SYMLINK_NOFOLLOW) == 0;
      const UniqueFd probe(::fcntl(dir.fd.get(), F_DUPFD_CLOEXEC, 0));  // the lock takes dir.fd
      if (!probe) throw sys_error("dup " + path);
      std::optional<StateStore> lock;
      try {
        lock.emplace(std::move(dir.fd), path, TpmVersion::V2);
      } catch (const Error& e) {
        if (const auto pid = state_lock_holder(probe.get()))
          return skip(path, "locked by process " + std::to_string(*pid));
        throw;
      }
      // A lock file gc made belongs to the state's owner, as the emulator's own would (a
      // runAs emulator could not open root's), should the directory stay after all.
      if (!had_lock_file && ::fchownat(lock->dir_fd(), ".lock", dir_st.st_uid, dir_st.st_gid,
                                       AT_SYMLINK_NOFOLLOW) != 0)
        throw sys_error("chown " + path + "/.lock");
      // What a run record or emulator could have changed before the lock was ours.
      for (const auto& rec : list_run_records(opts_.run_root)) {
        bool names_it = rec.container_id == *id;
        for (const auto& v : rec.vtpms) names_it |= v.state_path == path || v.state_dir == dir.id;
        if (names_it) return skip(path, "container " + rec.container_id + " started meanwhile");
      }
      if (!holds_only_tpm_files(lock->dir_fd()) || recently_used(lock->dir_fd(), dir_time))
        return skip(path, "changed meanwhile");
      // The directory just checked and locked, not one put in its place since.
      if (!remove_state_dir(opts_.state_root, path, dir.id))
        throw Error("files appeared in it while it was being removed");
      return report(path);
    } catch (const std::exception& e) {
      spdlog::error("gc: {}: {}", path, one_line(e.what()));
      return false;
    }
  }

 private:
  const HookOptions& opts_;
  const GcOptions& gc_;
  std::ostream& out_;
  const Clock::time_point now_;
  std::set<std::string> live_ids_, live_paths_;
  std::set<std::pair<dev_t, ino_t>> live_dirs_;

  unsigned record_failures_ = 0;

  // A record whose container is gone for good and whose teardown never came (a runtime that
  // failed the container after its setup hook succeeded runs none: crun). Gone for good: the
  // cgroup setup recorded (v2) no longer exists (cgroupfs keeps a stopped container's until
  // delete, and one started again under the same id has it again; a systemd scope goes at
  // stop, hence also the age), no emulator of it holds its state, and it is older than
  // unused_for. Without a recorded cgroup nothing tells; it stays.
  bool stale(const RunRecord& rec) const {
    if (rec.cgroup.empty()) return false;
    struct stat st {};
    if (::lstat(rec.cgroup.c_str(), &st) == 0 || errno != ENOENT) return false;
    const Clock::time_point started{std::chrono::milliseconds(rec.started_unix_ms)};
    if (now_ - started < gc_.unused_for) return false;
    return std::none_of(rec.vtpms.begin(), rec.vtpms.end(), emulator_alive);
  }

  // True once the record is gone (or, dry run, would be); false keeps it in force.
  bool drop_record(const RunRecord& rec) {
    const std::string path = run_record_path(opts_.run_root, rec.container_id);
    if (gc_.dry_run) return report(path);
    try {
      // The same file still (a new setup under that id writes a new start time).
      const auto now = read_run_record(opts_.run_root, rec.container_id);
      if (!now || now->started_unix_ms != rec.started_unix_ms) return false;
      remove_run_record(opts_.run_root, rec.container_id);
      return report(path);
    } catch (const std::exception& e) {
      spdlog::error("gc: {}: {}", path, one_line(e.what()));
      ++record_failures_;
      return false;
    }
  }

  bool in_use(const std::string& path, const std::string& id) const {
    return live_paths_.count(path) || live_ids_.count(id);
  }

  // The state blobs' newest mtime, or (a TPM that never saved) the directory's own.
  bool recently_used(int fd, Clock::time_point dir_time) const {
    return now_ - newest_state_blob_time(fd).value_or(dir_time) < gc_.unused_for;
  }

  static bool skip(const std::string& path, const std::string& why) {
    spdlog::debug("gc: keeping {}: {}", path, why);
    return true;
  }

  bool report(const std::string& path) {
    out_ << path << '\n' << std::flush;
    return true;
  }
};

}  // namespace

std::chrono::seconds parse_duration(const std::string& text) {
  const std::string bad = "duration \"" + text + "\" is not a number with a unit (s, m, h, d, w)";
  if (text == "0") return std::chrono::seconds(0);
  if (text.size() < 2 || text.size() > 12) throw Error(bad);
  const std::string digits = text.substr(0, text.size() - 1);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw Error(bad);
  const long long n = std::stoll(digits);
  std::chrono::seconds d;
  switch (text.back()) {
    case 's':
      d = std::chrono::seconds(n);
      break;
    case 'm':
      d = std::chrono::minutes(n);
      break;
    case 'h':
      d = std::chrono::hours(n);
      break;
    case 'd':
      d = std::chrono::hours(24 * n);
      break;
    case 'w':
      d = std::chrono::hours(24 * 7 * n);
      break;
    default:
      throw Error(bad);
  }
  // compared with clock differences in nanoseconds, which end after 292 years
  if (d > std::chrono::hours(24 * 365 * 100))
    throw Error("duration \"" + text + "\" is over 100 years");
  return d;
}

unsigned run_gc(const HookOptions& opts, const GcOptions& gc, std::ostream& out) {
  const std::string root = normal_path(opts.state_root, "--state-root");
  std::set<std::string> reserved;
  for (const auto& f : {opts.ca_key, opts.ca_cert})
    reserved.insert(normal_path(std::filesystem::path(f).parent_path(), "--ca-key/--ca-cert"));
  HookOptions o = opts;
  o.state_root = root;
  Collector c(o, gc, out);
  unsigned failed = c.record_failures();
  for (const auto& path : candidates(root, reserved)) failed += c.visit(path) ? 0 : 1;
  return failed;
}

}  // namespace vtpm
