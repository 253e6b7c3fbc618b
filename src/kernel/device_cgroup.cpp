#include "kernel/device_cgroup.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <fstream>
#include <functional>

#include "common/error.h"
#include "common/io_util.h"
#include "common/unique_fd.h"

namespace vtpm {
namespace {

bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

long bpf(int cmd, bpf_attr& attr) { return ::syscall(SYS_bpf, cmd, &attr, sizeof attr); }

struct CgroupLocation {
  bool v2 = false;
  std::string path;                 // relative to the hierarchy's root
  std::optional<std::string> pids;  // v1: the path in the pids hierarchy, where it is mounted
};

CgroupLocation find_cgroup(pid_t pid, const CgroupPaths& paths) {
  const std::string file = paths.proc + "/" + std::to_string(pid) + "/cgroup";
  const std::string text = read_file(file);
  std::optional<std::string> unified, devices, pids;
  for (const std::string_view line : split(text, '\n')) {
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string_view controllers = line.substr(a + 1, b - a - 1);
    const std::string path(line.substr(b + 1));
    if (line.substr(0, a) == "0" && controllers.empty()) unified = path;
    for (const std::string_view c : split(controllers, ','))
      if (c == "devices")
        devices = path;
      else if (c == "pids")
        pids = path;
  }
  if (devices) return {false, *devices, pids};
  if (unified) return {true, *unified, std::nullopt};
  throw Error("cannot find the cgroup of process " + std::to_string(pid) + " in " + file);
}

void check_cgroup_path(const std::string& p) {
  if (p.find("/../") != std::string::npos || p.ends_with("/..") ||
      p.find('\n') != std::string::npos)
    throw Error("refusing odd cgroup path " + p);
}

std::string grant_v1(const CgroupLocation& cg, std::span<const DevNum> devices,
                     const CgroupPaths& paths) {
  const std::string file = paths.cgroup_root + "/devices" + cg.path + "/devices.allow";
  for (const auto& d : devices) {
    std::ofstream out(file);
    out << "c " << d.major << ":" << d.minor << " rwm\n";
    out.flush();
    if (!out) throw sys_error("write " + file);
  }
  return "cgroup v1 devices.allow";
}

std::vector<bpf_insn> read_program(int prog_fd) {
  bpf_prog_info info{};
  bpf_attr attr{};
  attr.info.bpf_fd = static_cast<uint32_t>(prog_fd);
  attr.info.info_len = sizeof info;
  attr.info.info = reinterpret_cast<uint64_t>(&info);
  if (bpf(BPF_OBJ_GET_INFO_BY_FD, attr) != 0) throw sys_error("BPF_OBJ_GET_INFO_BY_FD");
  std::vector<bpf_insn> insns(info.xlated_prog_len / sizeof(bpf_insn));
  if (insns.empty()) throw Error("the kernel did not show the container's device program");
  info = {};
  info.xlated_prog_len = static_cast<uint32_t>(insns.size() * sizeof(bpf_insn));
  info.xlated_prog_insns = reinterpret_cast<uint64_t>(insns.data());
  attr = {};
  attr.info.bpf_fd = static_cast<uint32_t>(prog_fd);
  attr.info.info_len = sizeof info;
  attr.info.info = reinterpret_cast<uint64_t>(&info);
  if (bpf(BPF_OBJ_GET_INFO_BY_FD, attr) != 0) throw sys_error("BPF_OBJ_GET_INFO_BY_FD");
  // A program with helper calls or map references cannot be reloaded from its xlated form.
  for (const auto& i : insns)
    if ((i.code == (BPF_JMP | BPF_CALL)) ||
        (i.code == (BPF_LD | BPF_DW | BPF_IMM) && i.src_reg != 0))
      throw Error(
          "the container's device program uses maps or helpers; add a "
          "linux.resources.devices rule for the TPM instead");
  return insns;
}

UniqueFd load_program(const std::vector<bpf_insn>& insns) {
  static char license[] = "GPL";
  std::vector<char> log(65536);
  bpf_attr attr{};
  attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  attr.insns = reinterpret_cast<uint64_t>(insns.data());
  attr.insn_cnt = static_cast<uint32_t>(insns.size());
  attr.license = reinterpret_cast<uint64_t>(license);
  attr.log_buf = reinterpret_cast<uint64_t>(log.data());
  attr.log_size = static_cast<uint32_t>(log.size());
  attr.log_level = 1;
  UniqueFd fd(static_cast<int>(bpf(BPF_PROG_LOAD, attr)));
  if (!fd) {
    const int err = errno;
    spdlog::debug("verifier: {}", log.data());
    throw sys_error("load the patched device program", err);
  }
  return fd;
}

std::string grant_v2(const CgroupLocation& cg, std::span<const DevNum> devices,
                     const CgroupPaths& paths) {
  const std::string dir = paths.cgroup_root + cg.path;
  UniqueFd cg_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cg_fd) throw sys_error("open cgroup " + dir);
  // Kernels before 5.11 charge BPF programs to RLIMIT_MEMLOCK.
  rlimit unlimited{RLIM_INFINITY, RLIM_INFINITY};
  (void)::setrlimit(RLIMIT_MEMLOCK, &unlimited);  // newer kernels ignore it; a load error says why

  std::vector<uint32_t> ids(64);
  bpf_attr q{};
  q.query.target_fd = static_cast<uint32_t>(cg_fd.get());
  q.query.attach_type = BPF_CGROUP_DEVICE;
  q.query.prog_ids = reinterpret_cast<uint64_t>(ids.data());
  q.query.prog_cnt = static_cast<uint32_t>(ids.size());
  if (bpf(BPF_PROG_QUERY, q) != 0) throw sys_error("BPF_PROG_QUERY on " + dir);
  ids.resize(q.query.prog_cnt);
  const uint32_t mode = q.query.attach_flags;
  if (ids.empty()) return "cgroup v2: no device program on " + dir + ", nothing to do";

  for (uint32_t id : ids) {
    bpf_attr g{};
    g.prog_id = id;
    UniqueFd old_fd(static_cast<int>(bpf(BPF_PROG_GET_FD_BY_ID, g)));
    if (!old_fd) throw sys_error("BPF_PROG_GET_FD_BY_ID " + std::to_string(id));
    UniqueFd new_fd = load_program(prepend_device_allow(read_program(old_fd.get()), devices));
    bpf_attr a{};
    a.target_fd = static_cast<uint32_t>(cg_fd.get());
    a.attach_bpf_fd = static_cast<uint32_t>(new_fd.get());
    a.attach_type = BPF_CGROUP_DEVICE;
    if (mode & BPF_F_ALLOW_MULTI) {
      a.attach_flags = BPF_F_ALLOW_MULTI | BPF_F_REPLACE;
      a.replace_bpf_fd = static_cast<uint32_t>(old_fd.get());
    } else {
      a.attach_flags = mode;  // a single program: attaching again replaces it
    }
    if (bpf(BPF_PROG_ATTACH, a) != 0)
      throw sys_error("attach the patched device program to " + dir);
  }
  return "cgroup v2: patched " + std::to_string(ids.size()) + " device program(s) on " + dir;
}

}  // namespace

std::vector<bpf_insn> prepend_device_allow(std::span<const bpf_insn> original,
                                           std::span<const DevNum> devices) {
  constexpr uint8_t R0 = 0, R1 = 1, R2 = 2, R3 = 3, R4 = 4;
  std::vector<bpf_insn> p;
  // r2 = ctx->access_type & 0xffff (the device type); r3 = ctx->major; r4 = ctx->minor
  p.push_back(
      insn(BPF_LDX | BPF_W | BPF_MEM, R2, R1, offsetof(bpf_cgroup_dev_ctx, access_type), 0));
  p.push_back(insn(BPF_ALU | BPF_AND | BPF_K, R2, 0, 0, 0xffff));
  p.push_back(insn(BPF_LDX | BPF_W | BPF_MEM, R3, R1, offsetof(bpf_cgroup_dev_ctx, major), 0));
  p.push_back(insn(BPF_LDX | BPF_W | BPF_MEM, R4, R1, offsetof(bpf_cgroup_dev_ctx, minor), 0));
  // Each rule is 4 instructions; a non-char device skips them all.
  const auto rules = static_cast<int16_t>(devices.size() * 4);
  p.push_back(insn(BPF_JMP | BPF_JNE | BPF_K, R2, 0, rules, BPF_DEVCG_DEV_CHAR));
  for (const auto& d : devices) {
    p.push_back(insn(BPF_JMP | BPF_JNE | BPF_K, R3, 0, 3, static_cast<int32_t>(d.major)));
    p.push_back(insn(BPF_JMP | BPF_JNE | BPF_K, R4, 0, 2, static_cast<int32_t>(d.minor)));
    p.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, 1));
    p.push_back(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  }
  p.insert(p.end(), original.begin(), original.end());
  return p;
}

std::string grant_device_access(pid_t pid, std::span<const DevNum> devices,
                                const CgroupPaths& paths) {
  const CgroupLocation cg = find_cgroup(pid, paths);
  check_cgroup_path(cg.path);
  return cg.v2 ? grant_v2(cg, devices, paths) : grant_v1(cg, devices, paths);
}

}  // namespace vtpm

namespace vtpm {

std::optional<CgroupWatch> CgroupWatch::open(pid_t pid, const CgroupPaths& paths) {
  const CgroupLocation cg = find_cgroup(pid, paths);
  check_cgroup_path(cg.path);
  // A process in the hook's own cgroup (by hand, no runtime) or the root has no cgroup that
  // ends with the container: there is nothing to wait for.
  const CgroupLocation home = find_cgroup(::getpid(), paths);
  if (cg.path == "/" || cg.path == home.path) return std::nullopt;
  const std::string file = cg.v2 ? paths.cgroup_root + cg.path + "/cgroup.events"
                                 : paths.cgroup_root + "/devices" + cg.path + "/cgroup.procs";
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw sys_error("open " + file);
  CgroupWatch w(std::move(fd), cg.v2);
  if (cg.v2) w.dir_ = paths.cgroup_root + cg.path;
  // v1 cgroup.procs lists only the cgroup's own members; processes the container put into a
  // child cgroup count in pids.current. Not where the container shares the hook's pids cgroup.
  if (!cg.v2 && cg.pids && *cg.pids != "/" && cg.pids != home.pids) {
    check_cgroup_path(*cg.pids);
    const std::string pids = paths.cgroup_root + "/pids" + *cg.pids + "/pids.current";
    w.pids_.reset(::open(pids.c_str(), O_RDONLY | O_CLOEXEC));
    if (!w.pids_ && errno != ENOENT) throw sys_error("open " + pids);
  }
  return w;
}

CgroupWatch CgroupWatch::adopt_v2(UniqueFd events, std::string dir) {
  if (!events) throw Error("no cgroup.events to watch");
  CgroupWatch w(std::move(events), /*v2=*/true);
  w.dir_ = std::move(dir);
  return w;
}

bool remove_empty_cgroup(const std::string& dir) {
  if (dir.empty() || dir.ends_with(".scope")) return false;
  if (::rmdir(dir.c_str()) == 0) {
    spdlog::debug("removed the container's empty cgroup {}", dir);
    return true;
  }
  // ENOENT: the runtime removed it; EBUSY/ENOTEMPTY: processes or children remain (not ours).
  spdlog::debug("container cgroup {} not removed: {}", dir, std::strerror(errno));
  return false;
}

namespace {

// A small cgroup file's contents from its start ("" once the cgroup is gone). seq_file: rewind
// and read, rather than pread.
std::optional<std::string> reread(int fd) {
  char buf[4096];
  const ssize_t n = ::lseek(fd, 0, SEEK_SET) == 0 ? ::read(fd, buf, sizeof buf) : -1;
  if (n < 0) return std::nullopt;
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace

bool CgroupWatch::empty() const {
  const auto text = reread(fd_.get());
  if (!text) return true;  // the cgroup was removed: nobody is left in it
  if (v2_) {
    const auto p = text->find("populated ");
    return p != std::string::npos && text->compare(p + 10, 1, "0") == 0;
  }
  if (!text->empty()) return false;  // cgroup.procs lists one pid per line
  if (!pids_) return true;
  const auto count = reread(pids_.get());
  return !count || count->empty() || count->front() == '0';
}

std::optional<std::string> own_cgroup_v2(const CgroupPaths& paths) {
  const CgroupLocation loc = find_cgroup(::getpid(), paths);
  if (!loc.v2) return std::nullopt;
  check_cgroup_path(loc.path);
  return loc.path;
}

UniqueFd open_cgroup_dir(const std::string& path, const CgroupPaths& paths) {
  const std::string dir = paths.cgroup_root + path;
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw sys_error("open " + dir);
  return fd;
}

void check_in_cgroup(pid_t pid, const std::string& path, const CgroupPaths& paths) {
  const CgroupLocation now = find_cgroup(pid, paths);
  if (!now.v2 || now.path != path)
    throw Error("process " + std::to_string(pid) + " is not in the cgroup " + path);
}

}  // namespace vtpm
