#pragma once
// What a vTPM spec names on the host: a user for the emulator and the state's key files. The
// hook resolves and reads them; the parser only checks their form, the emulator gets results.
#include <optional>
#include <string>

#include "common/credentials.h"
#include "hook/hooks.h"
#include "oci/vtpm_request.h"
#include "state/state_key.h"

namespace vtpm {

// "name", "uid" or "uid:gid" (a name's group is its primary group). Throws Error.
Credentials resolve_user(const std::string& spec);

// What resolve_vtpms needs from the hook's options: the policy (loaded, and refused when its
// roots overlap the state root, the run root or the CA's directory), the CA's directories as
// reserved, the run root. Throws Error with one line.
RequestDefaults request_defaults(const HookOptions& opts);

// Checks that the spec's key or password file can be read safely, without reading it.
void check_key_files(const VtpmSpec& spec);

// The spec's encryption key (key file: 32 raw bytes; password file: PBKDF2 like swtpm's
// pwdfile), AES-256; nullopt without encryption. Throws Error naming the file.
// Both open a key file with no symlink anywhere on its path (the path was checked against the
// state root, run root and CA directory as a string), owned by root or the spec's runAs user.
std::optional<StateKey> load_state_key(const VtpmSpec& spec);

}  // namespace vtpm
