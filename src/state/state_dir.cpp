#include "state/state_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <libtpms/tpm_nvfilename.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "common/error.h"
#include "common/io_util.h"
#include "common/tpm_version.h"
#include "state/state_store.h"
#include "state/swtpm_blob.h"

namespace vtpm {
namespace {

// RESOLVE_NO_SYMLINKS also covers the last component (ELOOP), as O_NOFOLLOW would.
constexpr uint64_t kResolve =
    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

UniqueFd open_beneath(int dir_fd, const std::string& name) {
  return open_resolved(dir_fd, name, O_RDONLY | O_DIRECTORY, kResolve);
}

std::string relative_to(const std::string& root, const std::string& path) {
  if (path.size() <= root.size() + 1 || path.compare(0, root.size(), root) != 0 ||
      (root != "/" && path[root.size()] != '/'))
    throw Error("statePath " + path + " is not beneath " + root);
  return path.substr(root == "/" ? 1 : root.size() + 1);
}

UniqueFd open_root(const std::string& root, bool create) {
  if (create) {
    std::error_code ec;
    std::filesystem::create_directories(root, ec);  // the administrator's path
    if (ec) throw Error("cannot create state root " + root + ": " + ec.message());
  }
  UniqueFd fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw sys_error("open state root " + root);
  return fd;
}

std::string refused(const std::string& path, int err) {
  if (err == ELOOP) return "statePath " + path + " has a symbolic link in it";
  if (err == EXDEV) return "statePath " + path + " crosses a mount point or leaves its root";
  if (err == ENOTDIR) return "statePath " + path + " has a component that is not a directory";
  return "open statePath " + path;
}

// The TPM's own files: state blobs of either TPM family, the EK certificates, their temp
// files, the lock.
std::vector<std::string> tpm_file_names() {
  std::vector<std::string> out = {".lock"};
  for (auto v : {TpmVersion::V2, TpmVersion::V1_2})
    for (const auto& f : tpm_state_files(v))
      if (std::find(out.begin(), out.end(), f) == out.end()) {
        out.push_back(f);
        out.push_back(f + ".tmp");
      }
  return out;
}

// Gives a state dir of root's and the TPM's files in it to `owner`.
void adopt_tpm_files(int dir_fd, const std::string& path, const Credentials& owner) {
  for (const auto& name : tpm_file_names()) {
    struct stat st {};
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1)
      throw Error("statePath " + path + ": " + name +
                  " is not a regular file of its own; not giving it to the emulator user");
    if (::fchownat(dir_fd, name.c_str(), owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) != 0)
      throw sys_error("chown " + path + "/" + name);
  }
  if (::fchown(dir_fd, owner.uid, owner.gid) != 0) throw sys_error("chown " + path);
}

}  // namespace

StateDir open_state_dir(const std::string& root, const std::string& path, bool create,
                        const std::optional<Credentials>& owner, bool adopt_root_owned) {
  const std::filesystem::path rel = relative_to(root, path);
  UniqueFd cur = open_root(root, create);
  StateDir out;
  auto it = rel.begin();
  for (; it != rel.end(); ++it) {
    const std::string name = it->string();
    const bool last = std::next(it) == rel.end();
    if (name.empty() || name == "." || name == "..")
      throw Error("statePath " + path + " is not a normal path");
    UniqueFd next = open_beneath(cur.get(), name);
    if (!next && errno == ENOENT && create) {
      if (::mkdirat(cur.get(), name.c_str(), last ? 0700 : 0755) == 0) {
        out.created = last;
        // exactly these modes, whatever the umask (tpm2-tools' cmd TCTI runs with 0177)
        next = open_beneath(cur.get(), name);
        if (next && ::fchmod(next.get(), last ? 0700 : 0755) != 0) throw sys_error("chmod " + path);
      } else if (errno == EEXIST) {  // another setup made it first: it is not ours
        next = open_beneath(cur.get(), name);
      } else {
        throw sys_error("create " + path);
      }
    }
    if (!next) throw sys_error(refused(path, errno));
    cur = std::move(next);
  }
  struct stat st {};
  if (::fstat(cur.get(), &st) != 0) throw sys_error("stat " + path);
  if (owner) {
    if (out.created) {
      if (::fchown(cur.get(), owner->uid, owner->gid) != 0) throw sys_error("chown " + path);
    } else if (st.st_uid == 0 && owner->uid != 0 && adopt_root_owned) {
      adopt_tpm_files(cur.get(), path, *owner);
    } else if (st.st_uid != owner->uid) {
      throw Error("statePath " + path + " belongs to uid " + std::to_string(st.st_uid) +
                  ", not to the runAs uid " + std::to_string(owner->uid) +
                  " (the hook does not chown what it did not create)");
    }
  }
  out.fd = std::move(cur);
  out.id = {st.st_dev, st.st_ino};
  return out;
}

StateDir reopen_state_dir(const std::string& root, const std::string& path,
                          const std::optional<DirId>& recorded) {
  StateDir dir = open_state_dir(root, path, /*create=*/false);
  if (recorded && dir.id != *recorded)
    throw Error("state dir " + path + " is not the directory setup opened (device:inode " +
                std::to_string(dir.id.dev) + ":" + std::to_string(dir.id.ino) + ", recorded " +
                std::to_string(recorded->dev) + ":" + std::to_string(recorded->ino) + ")");
  return dir;
}

bool remove_state_dir(const std::string& root, const std::string& path,
                      const std::optional<DirId>& recorded) {
  StateDir dir;
  try {
    dir = reopen_state_dir(root, path, recorded);
  } catch (const SysError& e) {
    if (e.err == ENOENT) return true;  // already gone
    throw;
  }
  for (const auto& name : tpm_file_names()) {
    struct stat st {};
    if (::fstatat(dir.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISREG(st.st_mode)) continue;  // not something the TPM wrote: leave it
    if (::unlinkat(dir.fd.get(), name.c_str(), 0) != 0 && errno != ENOENT)
      throw sys_error("remove " + path + "/" + name);
  }
  // The parent is reached the same way, so the rmdir hits the directory that was emptied.
  const auto slash = path.rfind('/');
  const std::string parent = path.substr(0, slash), leaf = path.substr(slash + 1);
  UniqueFd parent_fd = parent == root || parent.empty()
                           ? open_root(root.empty() ? "/" : root, false)
                           : std::move(open_state_dir(root, parent, false).fd);
  struct stat st {};
  if (::fstatat(parent_fd.get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      DirId{st.st_dev, st.st_ino} != dir.id)
    throw Error("state dir " + path + " was replaced while it was being removed; kept the new one");
  if (::unlinkat(parent_fd.get(), leaf.c_str(), AT_REMOVEDIR) != 0) {
    if (errno == ENOTEMPTY || errno == EEXIST) return false;
    if (errno != ENOENT) throw sys_error("remove " + path);
  }
  return true;
}

}  // namespace vtpm

namespace vtpm {

std::vector<std::string> tpm_state_files(TpmVersion v) {
  return {state_file_name(v, TPM_PERMANENT_ALL_NAME), state_file_name(v, TPM_VOLATILESTATE_NAME),
          state_file_name(v, TPM_SAVESTATE_NAME), kEkCertificatesFile};
}

std::optional<std::chrono::system_clock::time_point> newest_state_blob_time(int dir_fd) {
  std::optional<std::chrono::system_clock::time_point> newest;
  for (const auto& name : tpm_file_names()) {
    struct stat st {};
    if (name == ".lock" || ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode))
      continue;
    const auto t = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(st.st_mtim.tv_sec) +
            std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
    newest = newest ? std::max(*newest, t) : t;
  }
  return newest;
}

bool holds_only_tpm_files(int dir_fd) {
  UniqueFd fd(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw sys_error("open a state dir to list it");
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(fd.get()), ::closedir);
  if (!dir) throw sys_error("list a state dir");
  fd.release();  // the DIR owns it now
  const auto names = tpm_file_names();
  while (const dirent* e = ::readdir(dir.get())) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (std::find(names.begin(), names.end(), name) == names.end() ||
        ::fstatat(dirfd(dir.get()), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode))
      return false;
  }
  return true;
}

}  // namespace vtpm
