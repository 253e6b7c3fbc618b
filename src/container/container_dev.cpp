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
#include <thread>

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

// <root>/<rel> as an O_PATH directory fd, every component resolved in the root; with `create`,
// missing components are made (0755, as the caller's fs ids).
UniqueFd open_dir_in_root(int root_fd, const std::string& rel, bool create) {
  std::string path;
  UniqueFd dir;
  for (const auto part : split(rel, '/')) {
    const std::string comp(part);
    if (comp.empty()) continue;
    const std::string parent = path.empty() ? "." : path;
    path = path.empty() ? comp : path + "/" + comp;
    dir =
        open_resolved(root_fd, path, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
    if (!dir && errno == ENOENT && create) {
      UniqueFd up = open_in_root(root_fd, parent, "the container's /" + parent);
      if (::mkdirat(up.get(), comp.c_str(), 0755) != 0 && errno != EEXIST)
        throw sys_error("create /" + path + " in the container");
      dir = open_resolved(root_fd, path, O_PATH | O_DIRECTORY,
                          RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
    }
    if (!dir) throw sys_error("open the container's /" + path);
  }
  if (!dir) throw Error("no directory named in the container");
  return dir;
}

// Attaches the detached mount `tree` (open_tree) at <root>/<dir>/<name> in the container's
// mount namespace, over an empty file put there as the container's root user (a mount needs
// something to cover; rename replaces whatever non-directory was there). `dir` is made where
// missing when `make_dir`. `is_it` checks what the name shows once mounted.
void attach_in_container(pid_t pid, const std::string& root_path, const std::string& dir,
                         bool make_dir, const std::string& name, int tree, const std::string& what,
                         const std::function<bool(const struct stat&)>& is_it,
                         const std::string& proc) {
  const uid_t root_uid = mapped_root(pid, proc, "uid_map");
  const gid_t root_gid = mapped_root(pid, proc, "gid_map");
  const std::string ns = proc + "/" + std::to_string(pid) + "/ns/mnt";
  UniqueFd mntns(::open(ns.c_str(), O_RDONLY | O_CLOEXEC));
  if (!mntns) throw sys_error("open " + ns);
  const std::string target = "/" + dir + (name.empty() ? "" : "/" + name);
  run_in_child(
      [&] {
        if (::setns(mntns.get(), CLONE_NEWNS) != 0) throw sys_error("setns into the container");
        UniqueFd top(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
        UniqueFd root = open_root_below(top, root_path);
        // An empty file to mount over, put in place like a node: rename replaces what was there.
        // (No name: the mount goes onto the directory itself.)
        auto make_mount_point = [&] {
          UniqueFd at = open_dir_in_root(root.get(), dir, make_dir);
          if (name.empty()) return at;
          const std::string tmp = ".vtpm-hook." + name + "." + std::to_string(::getpid());
          (void)::unlinkat(at.get(), tmp.c_str(), 0);  // a leftover of a killed hook, if any
          UniqueFd f(::openat(at.get(), tmp.c_str(),
                              O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
          if (!f) throw sys_error("create " + target + " in the container");
          f.reset();
          // EBUSY: a mount from an earlier setup in this same namespace (a process set up
          // again by hand). It is detached, not covered: teardown deleted the file it shows,
          // and the kernel mounts nothing on a deleted file (ENOENT).
          for (int tries = 0;; ++tries) {
            if (::renameat(at.get(), tmp.c_str(), at.get(), name.c_str()) == 0) break;
            const int err = errno;
            if (err == EBUSY && tries < 8 && ::fchdir(at.get()) == 0 &&
                ::umount2(name.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
              continue;
            (void)::unlinkat(at.get(), tmp.c_str(), 0);  // undo; the rename error counts
            throw sys_error("rename into " + target + " in the container", err);
          }
          return at;
        };
        // The container's directories belong to its user namespace, where the host's root has
        // no id: create as the container's root (mount itself needs no fs id).
        (void)::setfsgid(root_gid);  // returns the old id, never an error; openat checks
        (void)::setfsuid(root_uid);
        UniqueFd at;
        try {
          at = make_mount_point();
        } catch (const SysError& e) {
          // A rootfs not shifted to the user namespace (the host's root owns it): only the
          // host's root can make entries there, which the container sees as nobody's.
          if ((e.err != EACCES && e.err != EPERM) || root_uid == 0) throw;
          (void)::setfsgid(0);
          (void)::setfsuid(0);
          at = make_mount_point();
        }
        struct stat ts {};
        if (name.empty()) {
          if (::move_mount(tree, "", at.get(), "",
                           MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0)
            throw sys_error("mount " + what + " onto the container's " + target);
          UniqueFd now = open_dir_in_root(root.get(), dir, false);
          if (::fstat(now.get(), &ts) != 0 || !is_it(ts))
            throw Error(target + " in the container is not " + what + " after mounting");
          return;
        }
        if (::fstatat(at.get(), name.c_str(), &ts, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(ts.st_mode))
          throw Error(target + " in the container changed under us");
        if (::move_mount(tree, "", at.get(), name.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
          throw sys_error("bind-mount " + what + " onto the container's " + target);
        if (::fstatat(at.get(), name.c_str(), &ts, AT_SYMLINK_NOFOLLOW) != 0 || !is_it(ts))
          throw Error(target + " in the container is not " + what + " after mounting");
      },
      "put " + what + " into the container");
}

// A detached copy of the mount of what `fd` is (open_tree): a bind mount cannot take its
// source from another mount namespace, but such a copy can be attached in any.
UniqueFd detached_mount(int fd, uint64_t attrs, const std::string& what) {
  UniqueFd tree(::open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
  if (!tree) throw sys_error("open_tree " + what);
  mount_attr attr{};
  attr.attr_set = attrs;
  if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0)
    throw sys_error("set the mount attributes of " + what);
  return tree;
}

void bind_host_node(pid_t pid, const std::string& root_path, const std::string& name, DevNum dev,
                    const std::string& host_node, const std::string& proc) {
  check_name(name);
  UniqueFd node(::open(host_node.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!node) throw sys_error("open host node " + host_node);
  struct stat st {};
  const dev_t rdev = makedev(dev.major, dev.minor);
  if (::fstat(node.get(), &st) != 0 || !S_ISCHR(st.st_mode) || st.st_rdev != rdev)
    throw Error(host_node + " is not the character device " + std::to_string(dev.major) + ":" +
                std::to_string(dev.minor));
  // The node is the container's alone: its root user owns it, nobody else on the host may use it.
  const std::string node_path = "/proc/self/fd/" + std::to_string(node.get());
  if (::chown(node_path.c_str(), mapped_root(pid, proc, "uid_map"),
              mapped_root(pid, proc, "gid_map")) != 0 ||
      ::chmod(node_path.c_str(), 0600) != 0)
    throw sys_error("hand " + host_node + " to the container's root user");
  // nosuid, noexec, like the runtimes' own device mounts
  UniqueFd tree = detached_mount(node.get(), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, host_node);
  attach_in_container(
      pid, root_path, "dev", /*make_dir=*/false, name, tree.get(), host_node,
      [&](const struct stat& ts) { return S_ISCHR(ts.st_mode) && ts.st_rdev == rdev; }, proc);
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

void place_readonly_files(pid_t container_pid, const std::string& root_path, const std::string& dir,
                          const std::vector<ReadonlyFile>& files, const std::string& proc) {
  size_t bytes = 0;
  for (const auto& f : files) {
    check_name(f.name);
    bytes += f.content.size();
  }
  // A tmpfs of its own, not a bind mount of the host's file: its content is the container's
  // (CRIU checkpoints it with the container), and no host inode is reachable through it.
  UniqueFd fs(::fsopen("tmpfs", FSOPEN_CLOEXEC));
  if (!fs) throw sys_error("fsopen tmpfs");
  const std::string size = std::to_string(bytes + 65536);
  if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, "mode", "0755", 0) != 0 ||
      ::fsconfig(fs.get(), FSCONFIG_SET_STRING, "size", size.c_str(), 0) != 0 ||
      ::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0)
    throw sys_error("create a tmpfs for the container's /" + dir);
  UniqueFd tree(::fsmount(fs.get(), FSMOUNT_CLOEXEC,
                          MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));
  if (!tree) throw sys_error("fsmount the tmpfs for the container's /" + dir);
  for (const auto& f : files) {
    UniqueFd out(::openat(tree.get(), f.name.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444));
    if (!out) throw sys_error("create " + f.name + " for the container's /" + dir);
    write_all(out.get(),
              std::span(reinterpret_cast<const uint8_t*>(f.content.data()), f.content.size()),
              f.name);
  }
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_RDONLY;
  if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0)
    throw sys_error("make the container's /" + dir + " read-only");
  struct stat st {};
  if (::fstat(tree.get(), &st) != 0) throw sys_error("stat the tmpfs for /" + dir);
  attach_in_container(
      container_pid, root_path, dir, /*make_dir=*/true, "", tree.get(), "a read-only tmpfs",
      [&](const struct stat& ts) { return ts.st_dev == st.st_dev && ts.st_ino == st.st_ino; },
      proc);
}

UniqueFd wait_for_restored_root(pid_t pid, const std::string& marker,
                                std::chrono::milliseconds timeout, const std::string& proc) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  struct stat host {};
  if (::stat("/", &host) != 0) throw sys_error("stat /");
  const std::string root_link = proc + "/" + std::to_string(pid) + "/root";
  for (;;) {
    // One fd for the check and for what the caller does there: CRIU works in roots of its
    // own on the way, and only the checkpoint's node says this one is the container's.
    UniqueFd root(::open(root_link.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) return {};  // gone
    struct stat st {
    }, m{};
    if (::fstat(root.get(), &st) == 0 && (st.st_dev != host.st_dev || st.st_ino != host.st_ino) &&
        ::fstatat(root.get(), marker.c_str(), &m, AT_SYMLINK_NOFOLLOW) == 0 && S_ISCHR(m.st_mode))
      return root;
    if (std::chrono::steady_clock::now() >= deadline) return {};
    // (a check is an open and two stats; CRIU takes seconds between its pivot and the resume)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
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
