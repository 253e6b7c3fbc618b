#pragma once
// What vTPMs a container asked for, resolved and validated before anything is created.
#include <optional>
#include <string>
#include <vector>

#include "vtpm_hook/oci_config.h"
#include "vtpm_hook/oci_state.h"
#include "vtpm_hook/state_key.h"
#include "vtpm_hook/tpm_version.h"

namespace vtpm {

struct VtpmSpec {
  unsigned index = 0;  // becomes /dev/tpm<index> (+ /dev/tpmrm<index>) in the container
  TpmVersion version = TpmVersion::V2;
  std::string state_path;  // absolute
  bool state_path_managed = false;
  bool create_certs = false;                 // EK certificates in NV (TPM 2)
  std::vector<std::string> pcr_banks;        // e.g. {"sha256"}; empty keeps the TPM's banks
  std::optional<std::string> run_as;         // "user", "uid" or "uid:gid" for the emulator
  std::optional<std::string> key_file;       // AES-256 key (32 raw bytes) for the state
  std::optional<std::string> password_file;  // or a password, PBKDF2 like swtpm's pwdfile
};

// Annotations that podman, CRI-O and Kubernetes can set where config.json has no linux.vtpms.
inline constexpr const char* kAnnotationVtpm = "io.vtpm-hook.vtpm";
inline constexpr const char* kAnnotationVtpms = "io.vtpm-hook.vtpms";

struct RequestDefaults {
  std::string state_root;
};

// From linux.vtpms, else the io.vtpm-hook.* annotations (of the state and of config.json),
// else one TPM 2.0 under <state_root>/<id>. Throws Error naming the bad field.
std::vector<VtpmSpec> resolve_vtpms(const OciState& state, const BundleConfig& config,
                                    const RequestDefaults& defaults);

// The spec's encryption key (key file: 32 raw bytes; password file: PBKDF2 like swtpm's
// pwdfile), AES-256; nullopt without encryption. Throws Error naming the file.
std::optional<StateKey> load_state_key(const VtpmSpec& spec);

// "sha256,sha384" -> {"sha256", "sha384"}; unknown or repeated banks are an Error.
std::vector<std::string> parse_pcr_banks(const std::string& list, const std::string& what);

}  // namespace vtpm
