#pragma once
// A TPM's state directory: an exclusive lock and crash-safe blob files.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/tpm_version.h"
#include "common/unique_fd.h"
#include "state/state_key.h"

namespace vtpm {

// Beside the TPM's blobs: its EK certificates (PEM), written once when they are made, for the
// host's verifiers. Public data.
inline constexpr char kEkCertificatesFile[] = "ek-certificates.pem";

class StateStore {
 public:
  // Opens (creating when asked) the directory and takes the fcntl lock on <dir>/.lock.
  // Throws Error when another process holds it beyond lock_wait, naming that pid.
  // With a key, every file is written encrypted as swtpm --key writes it, and every file read
  // must be encrypted with that key (swtpm 0.7.1 refuses unencrypted files when it has a key).
  StateStore(std::string dir, TpmVersion version, bool create,
             std::chrono::milliseconds lock_wait = std::chrono::milliseconds(0),
             std::optional<StateKey> key = std::nullopt);

  // The same, on a directory the caller already opened (confined; see state_dir.h); `name`
  // is for messages.
  StateStore(UniqueFd dir_fd, std::string name, TpmVersion version,
             std::optional<StateKey> key = std::nullopt);

  const std::string& dir() const { return dir_; }
  int dir_fd() const { return dir_fd_.get(); }
  TpmVersion version() const { return version_; }
  bool encrypted() const { return key_.has_value(); }

  // libtpms names ("permall", "volatilestate", "savestate").
  std::optional<std::vector<uint8_t>> load(std::string_view name) const;
  // temp file + fsync + rename + fsync(dir): a reader sees the old or the new blob, never a mix.
  void store(std::string_view name, std::span<const uint8_t> blob) const;
  void remove(std::string_view name) const;
  // True when the blob exists: a TPM that has a "permall" was manufactured before.
  bool has(std::string_view name) const;

 private:
  std::string dir_;
  TpmVersion version_;
  std::optional<StateKey> key_;
  UniqueFd dir_fd_;
  UniqueFd lock_fd_;  // closing any fd of .lock drops the lock: this is the only one

  void lock(std::chrono::milliseconds wait);
};

// The pid holding the lock of an open state dir (see open_state_dir), if any. Never takes the
// lock. The lock file is reached by openat2 beneath dir_fd, never through a link or a mount:
// whoever owns the directory (a compromised emulator) may have put one there.
std::optional<pid_t> state_lock_holder(int dir_fd);

}  // namespace vtpm
