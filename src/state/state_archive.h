#pragma once
// One TPM's state as a transport archive (vtpm-hook export/import): its files, sealed with
// AES-256-GCM under a key the administrator gives. Layout: docs/state-format.md, "Export
// archives".
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/tpm_version.h"
#include "state/state_key.h"

namespace vtpm {

inline constexpr uint16_t kArchiveFormat = 1;
inline constexpr size_t kMaxArchiveSize = 16u << 20;
inline constexpr uint32_t kArchivePbkdf2Iterations = 210000;  // PBKDF2-HMAC-SHA512 (OWASP 2023)

// What the archive is sealed with: a key file's 32 bytes, or a password file's bytes (PBKDF2
// with the archive's own salt). StateKey wipes them.
struct ArchiveSecret {
  enum class Kind : uint8_t { Key = 0, Password = 1 };
  Kind kind = Kind::Key;
  StateKey bytes;
};
// --key-file (exactly 32 raw bytes) or --password-file (not empty), read with the rules of a
// state key file (no link, not writable by others). Throws Error naming the file.
ArchiveSecret load_archive_secret(const std::string& key_file, const std::string& password_file);

struct ArchiveFile {
  std::string name;  // a name of the TPM's own files (state_file_name, the EK certificates)
  std::vector<uint8_t> data;
  bool operator==(const ArchiveFile&) const = default;
};

struct StateArchive {
  TpmVersion version = TpmVersion::V2;
  uint32_t libtpms_version = 0;    // TPMLIB_GetVersion() of the exporting host
  std::string source;              // where it came from: "<id> vTPM <index> (<statePath>)"
  std::string exported_at;         // RFC 3339, UTC
  bool encrypted_at_rest = false;  // its blobs are sealed with a state key (keyFile/passwordFile)
  std::vector<ArchiveFile> files;
};

std::vector<uint8_t> seal_archive(const StateArchive& archive, const ArchiveSecret& secret,
                                  uint32_t pbkdf2_iterations = kArchivePbkdf2Iterations);
// Checks the tag before reading anything; every error names what is wrong ("wrong key or
// damaged archive", "not a vtpm-hook export archive", "archive format 2: this vtpm-hook reads
// format 1"). Throws Error.
StateArchive open_archive(std::span<const uint8_t> bytes, const ArchiveSecret& secret);

// "0.9.6" for TPMLIB_GetVersion()'s 0x000906.
std::string libtpms_version_string(uint32_t v);

// The TPM's state in an open state dir (the caller holds its lock): its blobs and EK
// certificates, read without following links. Throws Error when it has no permanent state.
StateArchive read_state_files(int dir_fd, const std::string& name);
// Writes the archive's files into an open, locked state dir, owned by the directory's owner:
// every file to a temp name first, then renamed; the TPM files it does not carry (another
// family's blobs, an old volatile state) are removed. Throws Error (temp files removed).
void write_state_files(int dir_fd, const std::string& name, const StateArchive& archive);
// Whether an open state dir holds any TPM state (a blob or EK certificates).
bool holds_tpm_state(int dir_fd);

}  // namespace vtpm
