#include "container/container_dev.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>

#include "common/error.h"
#include "common/io_util.h"
#include "common/process_util.h"

namespace vtpm {
namespace {

// The rootfs is untrusted: every lookup below it treats "/" and ".." as the root itself and
// refuses /proc magic links, so no symlink can lead out of it.
UniqueFd open_in_root(int root_fd, const std::string& rel, const std::string& what) {
  UniqueFd fd =
      open_resolved(root_fd, rel, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  if (!fd) throw sys_error("open " + what);
  return fd;
}

std::string strip_slashes(const std::string& p) {
  auto b = p.find_first_not_of('/');
  return b == std::string::npos ? "." : p.substr(b);
}

// Before pivot_root (runc, crun) the rootfs sits at its host path inside the container's mount
// namespace; the path itself comes from the trusted config.json.
UniqueFd open_root_below(UniqueFd& ns_root, const std::string& root_path) {
  UniqueFd root = open_resolved(ns_root.get(), strip_slashes(root_path), O_PATH | O_DIRECTORY,
                                RESOLVE_NO_MAGICLINKS);
  // No fallback to the process's own root when the path is missing: for a process that was
  // never pivoted, that root is the host's.
  if (!root)
    throw sys_error("open container root " + root_path + " in the container's mount namespace");
  return root;
}

UniqueFd open_container_root(pid_t pid, const std::string& root_path, const std::string& proc) {
  const std::string proc_root = proc + "/" + std::to_string(pid) + "/root";
  UniqueFd ns_root(::open(proc_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!ns_root) throw sys_error("open " + proc_root + " (is the container's pid right?)");
  return open_root_below(ns_root, root_path);
}

void check_name(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
    throw Error("bad device name \"" + name + "\"");
}

// Whether pid is in this process's namespace of that kind ("mnt", "user"). Throws SysError
// (ESRCH-like ENOENT when the process is gone).
bool shares_namespace(pid_t pid, const char* kind, const std::string& proc) {
  struct stat mine {
  }, theirs{};
  const std::string p = proc + "/" + std::to_string(pid) + "/ns/" + kind;
  if (::stat(p.c_str(), &theirs) != 0) throw sys_error("stat " + p);
  if (::stat((std::string("/proc/self/ns/") + kind).c_str(), &mine) != 0)
    throw sys_error(std::string("stat /proc/self/ns/") + kind);
  return mine.st_ino == theirs.st_ino && mine.st_dev == theirs.st_dev;
}

// The host id that the container's root (id 0 inside) maps to.
unsigned mapped_root(pid_t pid, const std::string& proc, const char* map) {
  const std::string p = proc + "/" + std::to_string(pid) + "/" + map;
  std::ifstream in(p);
  unsigned long inside = 0, outside = 0, count = 0;
  while (in >> inside >> outside >> count)
    if (inside == 0 && count > 0) return static_cast<unsigned>(outside);
  throw Error("the container's user namespace maps no root user (" + p + ")");
}

void bind_host_node(pid_t pid, const std::string& root_path, const std::string& name, DevNum dev,
                    const std::string& host_node, const std::string& proc) {
  check_name(name);
  UniqueFd node(::open(host_node.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!node) throw sys_error("open host node " + host_node);
  struct stat st {};
  if (::fstat(node.get(), &st) != 0 || !S_ISCHR(st.st_mode) ||
      st.st_rdev != makedev(dev.major, dev.minor))
    throw Error(host_node + " is not the character device " + std::to_string(dev.major) + ":" +
                std::to_string(dev.minor));
  // The node is the container's alone: its root user owns it, nobody else on the host may use it.
  const std::string node_path = "/proc/self/fd/" + std::to_string(node.get());
  const uid_t root_uid = mapped_root(pid, proc, "uid_map");
  const gid_t root_gid = mapped_root(pid, proc, "gid_map");
  if (::chown(node_path.c_str(), root_uid, root_gid) != 0 || ::chmod(node_path.c_str(), 0600) != 0)
    throw sys_error("hand " + host_node + " to the container's root user");
  // A bind mount cannot take its source from another mount namespace, but a detached copy
  // of it (open_tree) can be attached in any.
  UniqueFd tree(::open_tree(node.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
  if (!tree) throw sys_error("open_tree " + host_node);
  // nosuid, noexec, like the runtimes' own device mounts
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;
  if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0)
    throw sys_error("make the mount of " + host_node + " nosuid,noexec");
  const std::string ns = proc + "/" + std::to_string(pid) + "/ns/mnt";
  UniqueFd mntns(::open(ns.c_str(), O_RDONLY | O_CLOEXEC));
  if (!mntns) throw sys_error("open " + ns);

  run_in_child(
      [&] {
        if (::setns(mntns.get(), CLONE_NEWNS) != 0) throw sys_error("setns into the container");
        UniqueFd top(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
        UniqueFd root = open_root_below(top, root_path);
        UniqueFd dev_dir = open_in_root(root.get(), "dev", "the container's /dev");
        // The container's /dev belongs to its user namespace, where the host's root has no id:
        // create the mount point as the container's root (mount itself needs no fs id).
        (void)::setfsgid(root_gid);  // returns the old id, never an error; openat checks
        (void)::setfsuid(root_uid);
        // An empty file to mount over, put in place like a node: rename replaces what was there.
        const std::string tmp = ".vtpm-hook." + name + "." + std::to_string(::getpid());
        (void)::unlinkat(dev_dir.get(), tmp.c_str(), 0);  // a leftover of a killed hook, if any
        UniqueFd f(::openat(dev_dir.get(), tmp.c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!f) throw sys_error("create /dev/" + name + " in the container");
        f.reset();
        if (::renameat(dev_dir.get(), tmp.c_str(), dev_dir.get(), name.c_str()) != 0) {
          const int err = errno;
          (void)::unlinkat(dev_dir.get(), tmp.c_str(), 0);  // undo; the rename error counts
          throw sys_error("rename into /dev/" + name + " in the container", err);
        }
        struct stat ts {};
        if (::fstatat(dev_dir.get(), name.c_str(), &ts, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(ts.st_mode))
          throw Error("/dev/" + name + " in the container changed under us");
        if (::move_mount(tree.get(), "", dev_dir.get(), name.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
          throw sys_error("bind-mount " + host_node + " onto the container's /dev/" + name);
        if (::fstatat(dev_dir.get(), name.c_str(), &ts, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISCHR(ts.st_mode) || ts.st_rdev != makedev(dev.major, dev.minor))
          throw Error("/dev/" + name + " in the container is not the TPM after mounting");
      },
      "put " + host_node + " into the container");
}

}  // namespace

void check_container_process(pid_t pid, const std::string& proc) {
  bool shared = false;
  try {
    shared = shares_namespace(pid, "mnt", proc);
  } catch (const SysError& e) {
    throw SysError("OCI state: \"pid\" " + std::to_string(pid), e.err);
  }
  if (shared)
    throw Error("OCI state: \"pid\" " + std::to_string(pid) +
                " is not a container's process (it shares the host's mount namespace)");
}

void place_device_node_at(int root_fd, const std::string& name, DevNum dev) {
  check_name(name);
  UniqueFd dev_dir = open_in_root(root_fd, "dev", "the container's /dev");
  const std::string tmp = ".vtpm-hook." + name + "." + std::to_string(::getpid());
  const dev_t rdev = makedev(dev.major, dev.minor);
  (void)::unlinkat(dev_dir.get(), tmp.c_str(), 0);  // a leftover of a killed hook, if any
  // 0666: the TPM belongs to this container alone; its users and cgroup decide who uses it.
  const mode_t old_umask = ::umask(0);
  const int rc = ::mknodat(dev_dir.get(), tmp.c_str(), S_IFCHR | 0666, rdev);
  const int err = errno;
  ::umask(old_umask);
  if (rc != 0) throw sys_error("mknod /dev/" + name + " in the container", err);
  // rename() replaces a file, fifo, node or symlink at the name without following it.
  if (::renameat(dev_dir.get(), tmp.c_str(), dev_dir.get(), name.c_str()) != 0) {
    const int err = errno;
    (void)::unlinkat(dev_dir.get(), tmp.c_str(), 0);  // undo; the rename error counts
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
                       DevNum dev, const std::string& host_node, const std::string& proc) {
  if (!shares_namespace(container_pid, "user", proc)) {
    bind_host_node(container_pid, root_path, name, dev, host_node, proc);
    return;
  }
  UniqueFd root = open_container_root(container_pid, root_path, proc);
  place_device_node_at(root.get(), name, dev);
}

void remove_device_node(pid_t container_pid, const std::string& root_path, const std::string& name,
                        const std::string& proc) {
  try {
    UniqueFd root = open_container_root(container_pid, root_path, proc);
    UniqueFd dev_dir = open_in_root(root.get(), "dev", "the container's /dev");
    struct stat st {};
    if (::fstatat(dev_dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISCHR(st.st_mode))
      (void)::unlinkat(dev_dir.get(), name.c_str(), 0);  // gone already is as good
    // A bind-mounted node (user namespaces) goes away with the container's mount namespace.
  } catch (const Error&) {
    // The container is gone, and its /dev with it.
  }
}

}  // namespace vtpm
