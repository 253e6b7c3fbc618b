#pragma once
// The administrator's policy file: what a workload's author may choose and where TPM state may
// live. Everything here is the administrator's; nothing a workload writes can widen it.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/tpm_version.h"
#include "oci/measurement.h"

namespace vtpm {

inline constexpr const char* kDefaultPolicyPath = "/etc/vtpm-hook/policy.json";

// What kind of TPM: the fields of a linux.vtpms entry that touch nothing on the host.
struct VtpmChoice {
  TpmVersion version = TpmVersion::V2;
  std::vector<std::string> pcr_banks;  // empty keeps the TPM's banks
  bool create_certs = false;
};

// createCerts and pcrBanks need TPM 2. Throws Error naming `what`.
void check_vtpm_choice(const VtpmChoice& c, const std::string& what);

// Whose CRI annotations name a Kubernetes container (namespace, pod, container) for its
// default state. Only the runtime the administrator names: with any other way in (podman,
// runc), the workload's author writes those annotations himself.
enum class KubernetesIdentity { Off, Containerd, CriO };

// The PCR a launch is measured into by default: 21 can be reset and extended only at
// locality 2, which a container never reaches (docs/attestation.md says why not another).
inline constexpr unsigned kDefaultMeasurementPcr = 21;

struct Policy {
  // Directories under which a statePath may lie, besides the hook's --state-root.
  std::vector<std::string> state_path_roots;
  // linux.vtpms fields that annotations may set. By default only what changes the workload's
  // own TPM and nothing on the host.
  std::set<std::string> annotation_fields = {"vtpmVersion", "pcrBanks", "createCerts"};
  // CDI devices `vtpm-hook cdi` adds to "2" and "1.2": name -> the TPM the device stands for.
  std::map<std::string, VtpmChoice> cdi_devices = {};
  // Key a Kubernetes container's default state by namespace/pod/container instead of its id.
  KubernetesIdentity kubernetes_identity = KubernetesIdentity::Off;
  // vtpm-runc only: the real OCI runtime it execs (absolute path); empty: "runc" on PATH.
  std::string runtime;
  // vtpm-runc only: the hook's global options in the hooks it adds, e.g. {"--state-root",
  // "/srv/tpm"}, from the policy's "wrapperHookOptions" (stateRoot, runRoot, logFile,
  // logLevel, caKey, caCert).
  std::vector<std::string> wrapper_hook_args;
  // Directories beneath which an annotation's encryptionKeyFile or encryptionPasswordFile may
  // lie ("keyFileRoots"); none by default. config.json's key files are not confined to them.
  std::vector<std::string> key_file_roots = {};
  // kubernetesIdentityIncludesPodUid: the pod's UID in the kubernetesIdentity key too, so that
  // a new pod of the same name (or in a namespace created again) gets a new TPM; off keeps a
  // StatefulSet pod's TPM when the pod is created again.
  bool kubernetes_pod_uid = false;
  // measurementPcr: where setup measures the container's launch; none (null) measures nothing.
  std::optional<unsigned> measurement_pcr = kDefaultMeasurementPcr;
  // measurementImage: whose annotations name the image in a measured launch. "auto" (the
  // default) is the engine of kubernetesIdentity, none without it: with podman or runc, the
  // workload's author writes annotations himself, and they are no engine's statement.
  ImageSource measurement_image = ImageSource::None;
  // selfTest: "onDemand" (the default) answers the kernel's start-up TPM2_SelfTest(NO) with
  // TPM_RC_TESTING and lets libtpms test each algorithm before its first use (the rest when a
  // workload asks); "powerOn" runs the full test before the device exists, as swtpm does.
  bool self_test_on_demand = true;
  // template: "auto" (the default) forks emulators from the template process where one runs
  // (emulator/template.h) and starts one where it can; "off" forks each from the hook.
  bool use_template = true;
  // templateIdleSeconds: how long a template a hook started waits without a child or request
  // before it exits.
  unsigned template_idle_seconds = 60;
};

// What the hook keeps for itself, out of every annotation's reach: the state root (every
// container's default state, the CA's by default), the run root (run records) and the
// directories of --ca-key and --ca-cert.
struct HookDirs {
  std::string state_root;
  std::string run_root;
  std::vector<std::string> ca_dirs;
};

// Refuses a policy whose statePathRoots or keyFileRoots overlap one of the hook's directories
// (are it, contain it or lie in it), as written or as resolved through symlinks: annotations
// could then name other tenants' state or the CA's key. Throws Error naming `what`.
void check_policy_roots(const Policy& p, const HookDirs& dirs, const std::string& what);

// Parses a policy document; unknown keys and field names are errors. Throws Error.
Policy parse_policy(std::string_view json_text, const std::string& what);

// Reads the policy file: it must be a regular file owned by root and not writable by group or
// others. A missing file gives the defaults unless `required` (it was named explicitly).
Policy load_policy(const std::string& path, bool required);

}  // namespace vtpm
