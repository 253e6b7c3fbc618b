#pragma once
// The key that encrypts a TPM's state files, obtained the way swtpm 0.7.1 obtains it from
// `--key file=...` or `--key pwdfile=...` (see docs/state-format.md, "Encrypted state").
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace vtpm {

// An AES key: 16 bytes (AES-128-CBC) or 32 bytes (AES-256-CBC). The key size is all a state
// file records about its key (flag 0x08 for 256 bits).
struct StateKey {
  std::vector<uint8_t> bytes;
  StateKey() = default;
  StateKey(std::vector<uint8_t> b) : bytes(std::move(b)) {}  // NOLINT: brace-initialised
  StateKey(const StateKey&) = default;
  StateKey(StateKey&&) = default;
  StateKey& operator=(const StateKey&) = default;
  StateKey& operator=(StateKey&&) = default;
  ~StateKey();  // wipes the key: a process keeps no copy of a key it no longer needs
};

// What the hook demands besides, of a key or password file a container's spec names (the
// emulate command's files are the administrator's own and need only the basic rules).
struct SecretFileRules {
  bool no_symlinks = false;   // no component of the path may be a symlink (not only the last)
  std::vector<uid_t> owners;  // the file's owner is one of these; empty: any
};

// Opens a key or password file for reading: a regular file (not a link, FIFO or device), not
// writable by group or others, at most max_size bytes, and what `rules` ask. Throws Error
// naming the file.
UniqueFd open_secret_file(const std::string& path, const std::string& what, size_t max_size,
                          const SecretFileRules& rules = {});

inline constexpr size_t kMaxKeyFileSize = 4096;
inline constexpr size_t kMaxPasswordFileSize = 1u << 20;

// Reads a key file like swtpm's `--key file=PATH,format=FORMAT,mode=aes-BITS-cbc`:
//   format "binary": the file holds exactly bits/8 raw bytes;
//   format "hex":    bits/4 hex digits, optionally after "0x", optionally followed by whitespace.
// bits is 128 or 256. Throws Error naming the file when it is missing or unreadable, has the
// wrong size or is not hex. Unlike swtpm 0.7.1, a 16-byte binary key with bits 256 is refused
// rather than silently used as AES-128 (pass bits 128 for such a key: the files are the same).
StateKey load_key_file(const std::string& path, const std::string& format, int bits,
                       const SecretFileRules& rules = {});

// Derives a key from a password file like swtpm's `--key pwdfile=PATH,kdf=KDF,mode=aes-BITS-cbc`.
// The password is every byte of the file, a trailing newline included.
//   kdf "pbkdf2" (swtpm's default): PBKDF2-HMAC-SHA512, salt "swtpm", 1000 iterations, bits/8
//                                   bytes;
//   kdf "sha512":                   the first bits/8 bytes of SHA-512(password).
// Throws Error naming the file when it is missing, unreadable or empty.
StateKey derive_key_from_password_file(const std::string& path, int bits,
                                       const std::string& kdf = "pbkdf2",
                                       const SecretFileRules& rules = {});

// The bytes of a password file (all of them, a trailing newline included), in a StateKey only
// for its wiping. Throws Error naming the file when it is missing, unreadable or empty.
StateKey read_password_file(const std::string& path, const SecretFileRules& rules = {});

}  // namespace vtpm
