#pragma once
// vtpm-runc: an OCI runtime that adds vtpm-hook's hooks to a bundle's config.json on `create`
// and `run`, then execs the real runtime (runc unless the policy names another) with the same
// arguments. Every other command execs straight through. For engines without OCI hooks of their
// own: Docker (`--add-runtime`), containerd (`ctr run --runc-binary`, runc options BinaryName).
//
// Trust: the wrapper's argv and environment are the engine's (dockerd, containerd's shim), its
// settings the administrator's policy file; the workload's author reaches it only through
// config.json's annotations and process.env, and chooses there only "2", "1.2" or "none".
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/policy.h"

namespace vtpm {

inline constexpr const char* kWrapperName = "vtpm-runc";
// process.env variable for engines without annotations (Docker 20.10 `-e`): 2, 1.2 or none.
inline constexpr const char* kVtpmEnv = "VTPM_HOOK_VTPM";

// What the wrapper needs from a runtime command line (runc's and crun's syntax).
struct RuntimeArgs {
  std::string command;               // "create", "run", ... or "" (e.g. only --version)
  std::string bundle;                // create/run: --bundle/-b, else the working directory
  std::string log_file, log_format;  // global --log, --log-format (for the error line)
  bool edits = false;                // create or run without --help: config.json is edited
};

// args: argv[1..]. cwd: the working directory (the default bundle). Throws Error on an option
// it does not know where a value could hide the command or the bundle.
RuntimeArgs parse_runtime_args(const std::vector<std::string>& args, const std::string& cwd);

// The hooks the wrapper adds: path = this executable, args = {"vtpm-hook", hook_args...,
// "setup"|"teardown"}.
struct WrapperHooks {
  std::string path;
  std::vector<std::string> hook_args;
  // true when a hook's path is this executable (same file); default: same string
  std::function<bool(const std::string&)> is_self;
};

// config.json's text with setup (createRuntime) and teardown (poststop) appended, or nullopt when
// nothing changes: a hook of this executable is already there, or the container asks for no TPM
// (annotation io.vtpm-hook.vtpm "none", else process.env VTPM_HOOK_VTPM=none). VTPM_HOOK_VTPM=1.2
// becomes the annotation io.vtpm-hook.vtpm "1.2" when no io.vtpm-hook annotation or linux.vtpms
// chooses already. Every other field, and its order, stays. Throws Error.
std::optional<std::string> add_hooks_to_config(std::string_view config_text,
                                               const WrapperHooks& hooks);

// The whole wrapper: never returns on success (execs the real runtime); on failure prints
// "vtpm-runc: error: ..." on stderr (and to runc's --log file) and returns 1.
int run_runtime_wrapper(int argc, char** argv);

}  // namespace vtpm
