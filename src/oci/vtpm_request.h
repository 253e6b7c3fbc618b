#pragma once
// What vTPMs a container asked for, resolved and validated before anything is created.
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/tpm_version.h"
#include "oci/oci_config.h"
#include "oci/oci_state.h"
#include "oci/policy.h"

namespace vtpm {

struct VtpmSpec {
  unsigned index = 0;  // becomes /dev/tpm<index> (+ /dev/tpmrm<index>) in the container
  TpmVersion version = TpmVersion::V2;
  std::string state_path;  // absolute, normalised
  std::string state_root;  // the allowed root state_path lies strictly beneath
  bool state_path_managed = false;
  bool create_certs = false;                 // EK certificates in NV (TPM 2)
  bool open_platform = false;                // leave the platform hierarchy enabled (TPM 2)
  std::vector<std::string> pcr_banks;        // e.g. {"sha256"}; empty keeps the TPM's banks
  std::optional<std::string> run_as;         // "user", "uid" or "uid:gid" for the emulator
  std::optional<std::string> key_file;       // AES-256 key (32 raw bytes) for the state
  std::optional<std::string> password_file;  // or a password, PBKDF2 like swtpm's pwdfile
};

// Annotations that podman, CRI-O and Kubernetes can set where config.json has no linux.vtpms.
inline constexpr const char* kAnnotationVtpm = "io.vtpm-hook.vtpm";
inline constexpr const char* kAnnotationVtpms = "io.vtpm-hook.vtpms";
// io.vtpm-hook.vtpm's value for "no TPM" (for engines that add the hook to every container).
inline constexpr const char* kNoVtpm = "none";

struct RequestDefaults {
  std::string state_root;
  Policy policy;
  std::vector<std::string> reserved;  // directories no statePath may touch (the CA's)
  // The TPM a container gets when neither linux.vtpms nor an annotation asks for anything: the
  // administrator's, from the hook's command line (setup --default-version, e.g. a CDI device).
  VtpmChoice vtpm = {};
  // The hook's run root: like the state root and `reserved`, out of every annotation's reach.
  std::string run_root = {};
};

// The state dir setup gives vTPM `index` of container `id` when nothing names another (not a
// Kubernetes pod's): <state-root>/<id>[@tpm<index>]. Throws Error for a bad id or a reserved dir.
std::string container_state_path(const RequestDefaults& d, const std::string& id, unsigned index);

// From linux.vtpms, else the io.vtpm-hook.* annotations (of the state and of config.json),
// else one TPM (defaults.vtpm: 2.0 unless the administrator chose otherwise) under
// <state_root>/<id>. Annotations are the workload author's: they may
// set only the policy's annotationFields, their statePaths only the policy's extra roots and
// their key files only its keyFileRoots, and no path of theirs reaches the state root, the run
// root or a reserved directory, whatever the policy's roots. No key file lies there either.
// Every statePath lies strictly beneath an allowed root. Throws Error naming the bad field.
std::vector<VtpmSpec> resolve_vtpms(const OciState& state, const BundleConfig& config,
                                    const RequestDefaults& defaults);

// Under <state-root>: the default states of Kubernetes containers (policy kubernetesIdentity),
// <namespace>_<pod>_<container>[_<pod uid>][@tpm<i>]; a name longer than NAME_MAX becomes
// <its first kKubernetesKeyPrefix characters>+<SHA-256 of it, hex>[@tpm<i>]. No container id
// may take this name.
inline constexpr const char* kKubernetesStateDir = "kubernetes";
inline constexpr size_t kKubernetesKeyPrefix = 128;

// The administrator's way to keep the platform hierarchy open: never an annotation's, whatever
// the policy says (it reallocates PCRs, clears the TPM, rewrites the platform's NV).
inline constexpr const char* kOpenPlatformField = "openPlatformHierarchy";

// The linux.vtpms field names.
const std::set<std::string>& vtpm_fields();

// a and b (both normal) are one path, or one lies beneath the other.
bool paths_overlap(const std::string& a, const std::string& b);

// Absolute, lexically normal, no trailing '/', not "/". Throws Error naming `what`.
std::string normal_path(const std::string& p, const std::string& what);

// "sha256,sha384" -> {"sha256", "sha384"}; unknown or repeated banks are an Error.
std::vector<std::string> parse_pcr_banks(const std::string& list, const std::string& what);

}  // namespace vtpm
