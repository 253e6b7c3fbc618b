#pragma once
// Lets a container's cgroup open exactly the given character devices (cgroup v2 and v1).
#include <linux/bpf.h>
#include <sys/types.h>

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/dev_num.h"
#include "common/unique_fd.h"

namespace vtpm {

struct CgroupPaths {
  std::string proc = "/proc";
  std::string cgroup_root = "/sys/fs/cgroup";
};

// cgroup v2: every BPF_CGROUP_DEVICE program attached to the container's cgroup must allow an
// access, so each one is replaced by a copy that allows these devices first and then runs the
// original. cgroup v1: "c M:m rwm" goes to the container's devices.allow. Returns a short
// description of what was done. Throws Error.
std::string grant_device_access(pid_t pid, std::span<const DevNum> devices,
                                const CgroupPaths& paths = {});

// The pure part, for tests: `original` with an allow-prefix for the char devices in front.
std::vector<bpf_insn> prepend_device_allow(std::span<const bpf_insn> original,
                                           std::span<const DevNum> devices);

// Tells when no process is left in a container's cgroup: the only processes the device cgroup
// lets open what was granted to it. v2 watches cgroup.events ("populated", POLLPRI on change),
// v1 the devices cgroup's cgroup.procs and, where the pids controller is mounted, the
// container's pids.current, which counts its child cgroups (no notification: poll them).
class CgroupWatch {
 public:
  // nullopt when the container has no cgroup of its own (it shares this process's, or is in
  // the root). Throws Error.
  static std::optional<CgroupWatch> open(pid_t pid, const CgroupPaths& paths = {});
  // The watch another process opened (v2): its cgroup.events and the cgroup's directory.
  static CgroupWatch adopt_v2(UniqueFd events, std::string dir);
  int fd() const { return fd_.get(); }
  // Every fd it holds, all read-only regular files: a sandboxed keeper may hold them.
  std::vector<int> fds() const { return {fd_.get(), pids_.get()}; }
  bool notifies() const { return v2_; }
  bool empty() const;  // also when the cgroup is gone

  // cgroup v2: the container's cgroup directory (for remove_empty_cgroup and gc); "" for v1.
  const std::string& dir() const { return dir_; }

 private:
  CgroupWatch(UniqueFd fd, bool v2) : fd_(std::move(fd)), v2_(v2) {}
  UniqueFd fd_;
  bool v2_;
  std::string dir_;  // v2
  // v1: the container's pids.current, which (unlike cgroup.procs) counts its child cgroups too.
  UniqueFd pids_;
};

// After a container whose cgroup held emulators is gone: removes that cgroup directory (v2) if
// it is still there and empty. The runtime's own removal can fail (EBUSY) while an emulator is
// still leaving it; the runtime does not try again. A systemd scope is systemd's to remove.
// Never throws; returns whether it removed the directory.
bool remove_empty_cgroup(const std::string& dir);

// cgroup v2 (unified) only: this process's cgroup, as /proc/self/cgroup names it ("/a/b");
// nullopt on a v1 or hybrid host. Throws Error when it cannot be read.
std::optional<std::string> own_cgroup_v2(const CgroupPaths& paths = {});

// The v2 cgroup `path` (as own_cgroup_v2 names it), for clone3's CLONE_INTO_CGROUP: a process
// born there never runs anywhere else (no migration afterwards). Throws Error.
UniqueFd open_cgroup_dir(const std::string& path, const CgroupPaths& paths = {});

// Throws Error unless pid is in the v2 cgroup `path`.
void check_in_cgroup(pid_t pid, const std::string& path, const CgroupPaths& paths = {});

}  // namespace vtpm
