#pragma once
// swtpm 0.7's on-disk framing of libtpms state blobs (see docs/state-format.md).
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/tpm_version.h"
#include "state/state_key.h"

namespace vtpm {

// Wraps a libtpms state blob the way swtpm 0.7.1 stores it.
// Without a key: a 10-byte blob header (version 2, min_version 1, hdrsize 10, flags 0, totlen)
// and one DATA TLV holding the blob, byte for byte what swtpm writes.
// With a key (as swtpm --key): flags 0x01 (| 0x08 for a 32-byte key), then TLVs ENCRYPTED_DATA
// (AES-CBC of the blob padded to a multiple of the key size), HMAC (HMAC-SHA256 over the
// ciphertext and the IV) and IVEC (fresh random bytes, as many as the key has).
// Throws Error for a key that is not 16 or 32 bytes, a failing RNG, or a blob too large for
// the 32-bit length fields.
std::vector<uint8_t> wrap_state_blob(std::span<const uint8_t> libtpms_blob,
                                     const StateKey* key = nullptr);

// Returns the libtpms blob inside a file written by swtpm or by wrap_state_blob; also accepts
// swtpm's header-less legacy files and version-1 headers, and the migration blobs of
// `swtpm_ioctl --save` (not encrypted with a migration key). Throws Error with a clear message
// for an empty, truncated or corrupt file, and:
//   an encrypted file without key:          "state is encrypted; a key is needed"
//   a key the HMAC does not match:          "wrong key or corrupt state"
//   a 128-bit key for a 256-bit file or v.v.: "wrong key: ... written with a N-bit key"
//   an unencrypted file with a key:         an error, as swtpm 0.7.1 refuses such a file too
std::vector<uint8_t> unwrap_state_blob(std::span<const uint8_t> file_bytes,
                                       const StateKey* key = nullptr);

namespace detail {
// wrap_state_blob with a key, but with the given IV instead of a random one (tests compare
// with real swtpm files). iv must have as many bytes as the key.
std::vector<uint8_t> wrap_encrypted_state_blob(std::span<const uint8_t> libtpms_blob,
                                               const StateKey& key, std::span<const uint8_t> iv);
}  // namespace detail

// Whether a state file's blob header says it is sealed with a state key (flag 0x01).
bool state_blob_sealed(std::span<const uint8_t> file_bytes);

// "tpm2-00.permall" / "tpm-00.volatilestate" ...: swtpm's file name for a libtpms NVRAM name
// ("permall", "volatilestate", "savestate"). Throws Error for a name that is not a plain file
// name component.
std::string state_file_name(TpmVersion v, std::string_view libtpms_name);

}  // namespace vtpm
