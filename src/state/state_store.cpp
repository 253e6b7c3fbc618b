#include "state/state_store.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "common/error.h"
#include "common/io_util.h"
#include "state/swtpm_blob.h"

namespace vtpm {
namespace {

constexpr size_t kMaxBlob = 16u << 20;

// mkdir with exactly `mode`: the umask is not applied (tpm2-tools run their cmd TCTI child with
// umask 0177, which would leave a directory without search permission). Directories that
// exist are left alone. Errors of parent directories show up when the state dir is created.
void make_dir_exact(const std::filesystem::path& dir, mode_t mode, bool parents) {
  if (dir.empty()) return;
  if (parents && dir.has_parent_path() && dir.parent_path() != dir) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) return;
    make_dir_exact(dir.parent_path(), mode, true);
  }
  if (::mkdir(dir.c_str(), mode) != 0) {
    if (errno == EEXIST || parents) return;
    throw sys_error("create state dir " + dir.string());
  }
  if (::chmod(dir.c_str(), mode) != 0) throw sys_error("chmod " + dir.string());
}

struct flock write_lock_query() {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  return fl;
}

}  // namespace

StateStore::StateStore(std::string dir, TpmVersion version, bool create,
                       std::chrono::milliseconds lock_wait, std::optional<StateKey> key)
    : dir_(std::move(dir)), version_(version), key_(std::move(key)) {
  if (key_ && key_->bytes.size() != 16 && key_->bytes.size() != 32)
    throw Error("state key for " + dir_ + " has " + std::to_string(key_->bytes.size()) +
                " bytes; AES keys have 16 or 32");
  if (create) {
    make_dir_exact(std::filesystem::path(dir_).parent_path(), 0755, /*parents=*/true);
    make_dir_exact(dir_, 0700, /*parents=*/false);
  }
  dir_fd_.reset(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd_) throw sys_error("open state dir " + dir_);
  lock(lock_wait);
}

StateStore::StateStore(UniqueFd dir_fd, std::string name, TpmVersion version,
                       std::optional<StateKey> key)
    : dir_(std::move(name)), version_(version), key_(std::move(key)), dir_fd_(std::move(dir_fd)) {
  if (key_ && key_->bytes.size() != 16 && key_->bytes.size() != 32)
    throw Error("state key for " + dir_ + " has " + std::to_string(key_->bytes.size()) +
                " bytes; AES keys have 16 or 32");
  lock(std::chrono::milliseconds(0));
}

void StateStore::lock(std::chrono::milliseconds lock_wait) {
  lock_fd_.reset(::openat(dir_fd_.get(), ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock_fd_) throw sys_error("open " + dir_ + "/.lock");
  const auto deadline = std::chrono::steady_clock::now() + lock_wait;
  struct flock fl = write_lock_query();
  while (::fcntl(lock_fd_.get(), F_SETLK, &fl) != 0) {
    const int err = errno;
    if ((err == EAGAIN || err == EACCES) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    if (err != EAGAIN && err != EACCES) throw sys_error("lock " + dir_ + "/.lock", err);
    struct flock q = write_lock_query();
    if (::fcntl(lock_fd_.get(), F_GETLK, &q) != 0) throw sys_error("query " + dir_ + "/.lock");
    if (q.l_type == F_UNLCK) continue;  // released in between: try again
    throw Error("state dir " + dir_ + " is in use by process " + std::to_string(q.l_pid));
  }
}

std::optional<std::vector<uint8_t>> StateStore::load(std::string_view name) const {
  const std::string file = state_file_name(version_, name);
  UniqueFd fd(::openat(dir_fd_.get(), file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw sys_error("open " + dir_ + "/" + file);
  }
  const std::string text = read_all(fd.get(), kMaxBlob, dir_ + "/" + file);
  const std::vector<uint8_t> data(text.begin(), text.end());
  return with_context(dir_ + "/" + file,
                      [&] { return unwrap_state_blob(data, key_ ? &*key_ : nullptr); });
}

void StateStore::store(std::string_view name, std::span<const uint8_t> blob) const {
  const std::string file = state_file_name(version_, name);
  write_file_atomic(dir_fd_.get(), file, wrap_state_blob(blob, key_ ? &*key_ : nullptr),
                    dir_ + "/" + file);
}

void StateStore::remove(std::string_view name) const {
  const std::string file = state_file_name(version_, name);
  if (::unlinkat(dir_fd_.get(), file.c_str(), 0) != 0 && errno != ENOENT)
    throw sys_error("remove " + dir_ + "/" + file);
  (void)::fsync(dir_fd_.get());  // best effort: a file that comes back is only a stale blob
}

bool StateStore::has(std::string_view name) const {
  const std::string file = state_file_name(version_, name);
  return ::faccessat(dir_fd_.get(), file.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

std::optional<pid_t> state_lock_holder(int dir_fd) {
  // O_NONBLOCK: whoever owns the directory could have put a FIFO there.
  UniqueFd fd = open_resolved(
      dir_fd, ".lock", O_RDONLY | O_NONBLOCK,
      RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV);
  if (!fd) return std::nullopt;
  struct flock q = write_lock_query();
  if (::fcntl(fd.get(), F_GETLK, &q) != 0 || q.l_type == F_UNLCK) return std::nullopt;
  return q.l_pid;
}

}  // namespace vtpm
