#include "hook/state_transfer.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <ctime>

#include "common/error.h"
#include "common/io_util.h"
#include "hook/host_inputs.h"
#include "oci/vtpm_request.h"
#include "state/state_dir.h"
#include "state/state_store.h"
#include "tpm/tpm_engine.h"

namespace vtpm {
namespace {

std::string state_path_of(const HookOptions& opts, const TransferOptions& t) {
  if (!t.state_path.empty()) return normal_path(t.state_path, "--state-path");
  return container_state_path(request_defaults(opts), t.id, t.index);
}

std::string source_of(const TransferOptions& t, const std::string& path) {
  return t.state_path.empty() ? t.id + " vTPM " + std::to_string(t.index) + " (" + path + ")"
                              : path;
}

// The state dir's lock, as a running emulator holds it: while this lives, no emulator runs on
// the directory. (A StateStore's lock; the files themselves are read and written raw.)
StateStore lock_state(const StateDir& dir, const std::string& path) {
  UniqueFd fd(::fcntl(dir.fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!fd) throw sys_error("dup the fd of " + path);
  try {
    return StateStore(std::move(fd), path, TpmVersion::V2);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + ": its TPM is running; stop the container first");
  }
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  char buf[32];
  ::gmtime_r(&now, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

void export_state(const HookOptions& opts, const TransferOptions& t, const ArchiveSecret& secret) {
  const std::string path = state_path_of(opts, t);
  if (t.file.empty() && ::isatty(STDOUT_FILENO))
    throw Error("not writing an archive to a terminal: give --output or redirect stdout");
  const StateDir dir = open_state_dir(opts.state_root, path, /*create=*/false);
  const StateStore lock = lock_state(dir, path);
  StateArchive a = read_state_files(dir.fd.get(), path);
  a.libtpms_version = libtpms_version();
  a.source = source_of(t, path);
  a.exported_at = utc_now();
  const std::vector<uint8_t> sealed = seal_archive(a, secret);
  if (t.file.empty())
    write_all(STDOUT_FILENO, sealed, "stdout");
  else
    write_file_atomic(t.file, sealed);
  spdlog::info("exported TPM {} of {} ({} files{}) to {}", to_string(a.version), a.source,
               a.files.size(), a.encrypted_at_rest ? ", encrypted with its state key" : "",
               t.file.empty() ? "stdout" : t.file);
}

void import_state(const HookOptions& opts, const TransferOptions& t, const ArchiveSecret& secret) {
  const std::string path = state_path_of(opts, t);
  std::string bytes;
  if (t.file.empty()) {
    bytes = read_all(STDIN_FILENO, kMaxArchiveSize, "the archive on stdin");
  } else {
    struct stat st {};
    UniqueFd fd = open_regular_file(AT_FDCWD, t.file, t.file, st);
    if (!fd) throw sys_error("open " + t.file);
    bytes = read_all(fd.get(), kMaxArchiveSize, t.file);
  }
  const StateArchive a = with_context(t.file.empty() ? "stdin" : t.file, [&] {
    return open_archive(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
                        secret);
  });
  const uint32_t here = libtpms_version();
  if ((a.libtpms_version & 0xffff00) > (here & 0xffff00))
    throw Error("the archive's state was written by libtpms " +
                libtpms_version_string(a.libtpms_version) + "; this host's libtpms " +
                libtpms_version_string(here) +
                " may not read it (libtpms reads the state of its own and older versions)");

  StateDir dir = open_state_dir(opts.state_root, path, /*create=*/true);
  try {
    const StateStore lock = lock_state(dir, path);
    if (!dir.created && !t.force && holds_tpm_state(dir.fd.get()))
      throw Error(path + " already holds a TPM's state; --force replaces it");
    write_state_files(dir.fd.get(), path, a);
  } catch (...) {
    if (dir.created) remove_state_dir(opts.state_root, path, dir.id);
    throw;
  }
  spdlog::info("imported TPM {} of {} (exported {}, libtpms {}) into {}{}", to_string(a.version),
               a.source, a.exported_at, libtpms_version_string(a.libtpms_version), path,
               a.encrypted_at_rest ? "; its files are sealed with its old state key, which its "
                                     "new container must name too"
                                   : "");
}

}  // namespace vtpm
