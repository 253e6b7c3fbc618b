#pragma once
// The OCI runtime state a runtime writes to a hook's stdin.
#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace vtpm {

struct OciState {
  std::string id;
  std::string status;  // "creating"/"created" at setup, "stopped" at teardown
  std::optional<pid_t> pid;
  std::string bundle;  // absolute
  std::map<std::string, std::string> annotations;
};

// Throws Error naming the bad field.
OciState parse_oci_state(std::string_view json_text);

// Container ids become file names: allow what runc allows, nothing that walks paths.
// `what` names the id in errors.
void validate_container_id(const std::string& id, const std::string& what = "OCI state: \"id\"");

}  // namespace vtpm
