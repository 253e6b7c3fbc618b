#pragma once
// A Container Device Interface spec whose devices give a container a vTPM: podman (4.1+),
// CRI-O, containerd (1.7+, enable_cdi) and Docker (25+) read it from /etc/cdi or /var/run/cdi.
// The devices only add hooks: setup at createRuntime, teardown at poststop, with the
// administrator's options on the hook's command line (the spec is the administrator's file).
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "oci/policy.h"

namespace vtpm {

inline constexpr const char* kCdiKind = "vtpm-hook.io/tpm";
// The first version whose device names may start with a digit ("2", "1.2") and the newest that
// podman 4.3's CDI library (v0.5.x) accepts; later libraries (v0.6 - v1.x) read it too.
inline constexpr const char* kCdiVersion = "0.5.0";

struct CdiDevice {
  std::string name;
  VtpmChoice tpm;
};

struct CdiOptions {
  std::string hook_path;                 // absolute: the runtime runs the hook without a PATH
  std::vector<std::string> global_args;  // the hook's global options, before the subcommand
  std::vector<std::string> setup_args;   // more options of setup (e.g. --no-device-cgroup)
  std::vector<CdiDevice> devices;
};

// "2" and "1.2", then the policy's cdiDevices (in name order).
std::vector<CdiDevice> cdi_devices(const Policy& policy);

// The spec, checked with validate_cdi_spec. Throws Error.
nlohmann::json make_cdi_spec(const CdiOptions& opts);

// Writes the spec atomically, mode 0644 (engines list every spec of the directory), making the
// directory (0755) when it is missing. Throws Error.
void install_cdi_spec(const std::string& path, const std::string& text);

// What the CDI schema (schema/schema.json, defs.json) and the Go library's checks (v0.5.x, as
// vendored by podman 4.3: strict decoding, version, vendor/class/device names, non-empty device
// edits, hook names and paths, env entries) demand of a spec that uses the fields of 0.5.0.
// Throws Error naming the first violation.
void validate_cdi_spec(const nlohmann::json& spec);

}  // namespace vtpm
