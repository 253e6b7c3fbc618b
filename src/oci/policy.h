#pragma once
// The administrator's policy file: what a workload's author may choose and where TPM state may
// live. Everything here is the administrator's; nothing a workload writes can widen it.
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace vtpm {

inline constexpr const char* kDefaultPolicyPath = "/etc/vtpm-hook/policy.json";

struct Policy {
  // Directories under which a statePath may lie, besides the hook's --state-root.
  std::vector<std::string> state_path_roots;
  // linux.vtpms fields that annotations may set. By default only what changes the workload's
  // own TPM and nothing on the host.
  std::set<std::string> annotation_fields = {"vtpmVersion", "pcrBanks", "createCerts"};
  // vtpm-runc only: the real OCI runtime it execs (absolute path); empty: "runc" on PATH.
  std::string runtime;
  // vtpm-runc only: the hook's global options in the hooks it adds, e.g. {"--state-root",
  // "/srv/tpm"}, from the policy's "wrapperHookOptions" (stateRoot, runRoot, logFile,
  // logLevel, caKey, caCert).
  std::vector<std::string> wrapper_hook_args;
};

// Parses a policy document; unknown keys and field names are errors. Throws Error.
Policy parse_policy(std::string_view json_text, const std::string& what);

// Reads the policy file: it must be a regular file owned by root and not writable by group or
// others. A missing file gives the defaults unless `required` (it was named explicitly).
Policy load_policy(const std::string& path, bool required);

}  // namespace vtpm
