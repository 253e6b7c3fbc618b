#pragma once
// What vTPMs a container asked for, resolved and validated before anything is created.
#include <string>
#include <vector>

#include "vtpm_hook/oci_config.h"
#include "vtpm_hook/oci_state.h"
#include "vtpm_hook/tpm_version.h"

namespace vtpm {

struct VtpmSpec {
  unsigned index = 0;  // becomes /dev/tpm<index> (+ /dev/tpmrm<index>) in the container
  TpmVersion version = TpmVersion::V2;
  std::string state_path;  // absolute
  bool state_path_managed = false;
};

struct RequestDefaults {
  std::string state_root;
};

// linux.vtpms when present, else one TPM 2.0 under <state_root>/<id>. Throws Error.
std::vector<VtpmSpec> resolve_vtpms(const OciState& state, const BundleConfig& config,
                                    const RequestDefaults& defaults);

}  // namespace vtpm
