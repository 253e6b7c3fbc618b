#pragma once
#include <string>

#include "oci/policy.h"

namespace vtpm {

struct HookOptions {
  std::string state_root = "/var/lib/vtpm-hook";
  std::string run_root = "/run/vtpm-hook";
  std::string log_level = "info";
  std::string log_file;
  std::string vtpmx = "/dev/vtpmx";
  bool device_cgroup = true;  // let the container's cgroup open its TPM devices
  std::string ca_key;         // EK certificate CA; default <state_root>/ca/ek-ca-key.pem
  std::string ca_cert;        // default <state_root>/ca/ek-ca-cert.pem
  std::string policy = "/etc/vtpm-hook/policy.json";
  bool policy_required = false;  // --policy given: the file must exist
  // Emulators and keepers run as this unprivileged user (a vTPM's runAs overrides it).
  std::string emulator_user = "vtpm-hook";
  // setup: the TPM of a container whose config.json and annotations ask for none in particular
  VtpmChoice default_vtpm;
};

// prestart/createRuntime: everything or nothing. Throws Error.
void run_setup(const std::string& state_json, const HookOptions& opts);

// For a hooks.d file, whose one args list serves every stage: setup while the container is
// "creating"/"created", teardown once it is "stopped".
void run_hook_by_status(const std::string& state_json, const HookOptions& opts);

// poststop: idempotent; an unknown container is a warning, not an error.
void run_teardown(const std::string& state_json, const HookOptions& opts);

}  // namespace vtpm
