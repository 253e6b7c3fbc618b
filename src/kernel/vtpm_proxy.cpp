#include "kernel/vtpm_proxy.h"

#include <fcntl.h>
#include <linux/vtpm_proxy.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>

#include "common/error.h"
#include "common/io_util.h"

namespace vtpm {
namespace {

std::optional<DevNum> read_dev_attr(const std::string& path) {
  std::string text;
  try {
    text = read_file(path, 64);
  } catch (const SysError&) {
    return std::nullopt;  // not there (yet), or going (ENODEV while it is unregistered)
  }
  unsigned maj = 0, min = 0;
  if (std::sscanf(text.c_str(), "%u:%u", &maj, &min) != 2) return std::nullopt;
  return DevNum{maj, min};
}

// The node `path` if it is the character device `dev`, root:root 0600 afterwards. O_PATH: opening
// the TPM itself would take it from a client (/dev/tpmN has one opener at a time).
void restrict_node(const std::string& path, DevNum dev) {
  UniqueFd fd(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT || errno == ELOOP) return;  // no node, or a link: not the device's node
    throw sys_error("open " + path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw sys_error("stat " + path);
  if (!S_ISCHR(st.st_mode) || st.st_rdev != ::makedev(dev.major, dev.minor)) return;
  if ((st.st_uid != 0 || st.st_gid != 0) && ::fchownat(fd.get(), "", 0, 0, AT_EMPTY_PATH) != 0)
    throw sys_error("chown " + path + " to root:root");
  // fchmod refuses O_PATH fds; the magic link reaches the same inode.
  if ((st.st_mode & 07777) != 0600 &&
      ::chmod(("/proc/self/fd/" + std::to_string(fd.get())).c_str(), 0600) != 0)
    throw sys_error("chmod 0600 " + path);
}

}  // namespace

void restrict_host_nodes(const HostDevices& host, const std::string& dev_dir) {
  const std::string n = std::to_string(host.tpm_num);
  restrict_node(dev_dir + "/tpm" + n, host.tpm);
  if (host.tpmrm) restrict_node(dev_dir + "/tpmrm" + n, *host.tpmrm);
}

void check_vtpmx_available(const std::string& vtpmx) {
  struct stat st {};
  if (::stat(vtpmx.c_str(), &st) != 0)
    throw sys_error(vtpmx + " is not available (load the kernel module: modprobe tpm_vtpm_proxy)");
  if (!S_ISCHR(st.st_mode)) throw Error(vtpmx + " is not a character device");
}

ProxyDevice create_proxy_device(TpmVersion v, const std::string& vtpmx) {
  check_vtpmx_available(vtpmx);
  UniqueFd ctl(::open(vtpmx.c_str(), O_RDWR | O_CLOEXEC));
  if (!ctl) throw sys_error("open " + vtpmx);
  struct vtpm_proxy_new_dev req {};
  req.flags = v == TpmVersion::V2 ? VTPM_PROXY_FLAG_TPM2 : 0;
  if (::ioctl(ctl.get(), VTPM_PROXY_IOC_NEW_DEV, &req) != 0)
    throw sys_error("VTPM_PROXY_IOC_NEW_DEV on " + vtpmx);
  // The kernel hands the fd out without close-on-exec; nothing we exec may keep the device alive.
  ProxyDevice dev{UniqueFd(static_cast<int>(req.fd)), req.tpm_num};
  if (::fcntl(dev.server_fd.get(), F_SETFD, FD_CLOEXEC) != 0) throw sys_error("fcntl FD_CLOEXEC");
  return dev;
}

std::optional<HostDevices> read_host_devices(unsigned tpm_num, TpmVersion v,
                                             const std::string& sysfs) {
  const std::string n = std::to_string(tpm_num);
  auto tpm = read_dev_attr(sysfs + "/tpm/tpm" + n + "/dev");
  if (!tpm) return std::nullopt;
  HostDevices out{tpm_num, *tpm, std::nullopt};
  if (v == TpmVersion::V2) {
    out.tpmrm = read_dev_attr(sysfs + "/tpmrm/tpmrm" + n + "/dev");
    if (!out.tpmrm) return std::nullopt;
  }
  return out;
}

}  // namespace vtpm
