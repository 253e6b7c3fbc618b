#pragma once
// swtpm 0.7's on-disk framing of libtpms state blobs (see docs/state-format.md).
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vtpm_hook/tpm_version.h"

namespace vtpm {

// Wraps a libtpms state blob the way swtpm 0.7.1 stores it unencrypted: a 10-byte blob header
// (version 2, min_version 1, hdrsize 10, flags 0, totlen) and one TAG_DATA TLV holding the blob.
// Throws Error if the blob is too large for the 32-bit length fields.
std::vector<uint8_t> wrap_state_blob(std::span<const uint8_t> libtpms_blob);

// Returns the libtpms blob inside a file written by swtpm or by wrap_state_blob; also accepts
// swtpm's header-less legacy files (returned as they are) and version-1 headers, and the
// unencrypted migration blobs of `swtpm_ioctl --save`. Throws Error with a clear message for an
// empty, truncated, corrupt or encrypted file.
std::vector<uint8_t> unwrap_state_blob(std::span<const uint8_t> file_bytes);

// "tpm2-00.permall" / "tpm-00.volatilestate" ...: swtpm's file name for a libtpms NVRAM name
// ("permall", "volatilestate", "savestate"). Throws Error for a name that is not a plain file
// name component.
std::string state_file_name(TpmVersion v, std::string_view libtpms_name);

}  // namespace vtpm
