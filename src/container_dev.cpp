#include "vtpm_hook/container_dev.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "vtpm_hook/error.h"

namespace vtpm {
namespace {

// The rootfs is untrusted: every lookup below it treats "/" and ".." as the root itself and
// refuses /proc magic links, so no symlink can lead out of it.
UniqueFd open_in_root(int root_fd, const std::string& rel, const std::string& what) {
  struct open_how how {};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof how)));
  if (!fd) throw sys_error("open " + what);
  return fd;
}

std::string strip_slashes(const std::string& p) {
  auto b = p.find_first_not_of('/');
  return b == std::string::npos ? "." : p.substr(b);
}

UniqueFd open_container_root(pid_t pid, const std::string& root_path, const std::string& proc) {
  const std::string proc_root = proc + "/" + std::to_string(pid) + "/root";
  UniqueFd ns_root(::open(proc_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!ns_root) throw sys_error("open " + proc_root + " (is the container's pid right?)");
  // Before pivot_root (runc, crun) the rootfs sits at its host path inside the container's mount
  // namespace; the path itself comes from the trusted config.json.
  struct open_how how {};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_NO_MAGICLINKS;
  UniqueFd root(static_cast<int>(
      ::syscall(SYS_openat2, ns_root.get(), strip_slashes(root_path).c_str(), &how, sizeof how)));
  if (root) return root;
  if (errno == ENOENT) return ns_root;  // the runtime already pivoted: its root is the rootfs
  throw sys_error("open container root " + root_path);
}

}  // namespace

void place_device_node_at(int root_fd, const std::string& name, DevNum dev) {
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
    throw Error("bad device name \"" + name + "\"");
  UniqueFd dev_dir = open_in_root(root_fd, "dev", "the container's /dev");
  const std::string tmp = ".vtpm-hook." + name + "." + std::to_string(::getpid());
  const dev_t rdev = makedev(dev.major, dev.minor);
  ::unlinkat(dev_dir.get(), tmp.c_str(), 0);
  if (::mknodat(dev_dir.get(), tmp.c_str(), S_IFCHR | 0600, rdev) != 0)
    throw sys_error("mknod /dev/" + name + " in the container");
  // 0666: the TPM belongs to this container alone; its users and cgroup decide who uses it.
  if (::fchmodat(dev_dir.get(), tmp.c_str(), 0666, 0) != 0) {
    const int err = errno;
    ::unlinkat(dev_dir.get(), tmp.c_str(), 0);
    throw sys_error("chmod /dev/" + name + " in the container", err);
  }
  // rename() replaces a file, fifo, node or symlink at the name without following it.
  if (::renameat(dev_dir.get(), tmp.c_str(), dev_dir.get(), name.c_str()) != 0) {
    const int err = errno;
    ::unlinkat(dev_dir.get(), tmp.c_str(), 0);
    if (err == EISDIR || err == ENOTEMPTY || err == EEXIST)
      throw Error("the container's /dev/" + name + " is a directory; refusing to replace it");
    throw sys_error("rename into /dev/" + name + " in the container", err);
  }
  struct stat st {};
  if (::fstatat(dev_dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    throw sys_error("stat /dev/" + name + " in the container");
  if (!S_ISCHR(st.st_mode) || st.st_rdev != rdev)
    throw Error("/dev/" + name + " in the container changed under us");
}

void place_device_node(pid_t container_pid, const std::string& root_path, const std::string& name,
                       DevNum dev, const std::string& proc) {
  UniqueFd root = open_container_root(container_pid, root_path, proc);
  place_device_node_at(root.get(), name, dev);
}

void remove_device_node(pid_t container_pid, const std::string& root_path, const std::string& name,
                        const std::string& proc) {
  try {
    UniqueFd root = open_container_root(container_pid, root_path, proc);
    UniqueFd dev_dir = open_in_root(root.get(), "dev", "the container's /dev");
    struct stat st {};
    if (::fstatat(dev_dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISCHR(st.st_mode))
      ::unlinkat(dev_dir.get(), name.c_str(), 0);
  } catch (const Error&) {
    // The container is gone, and its /dev with it.
  }
}

}  // namespace vtpm
