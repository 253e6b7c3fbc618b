#include "oci/oci_state.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "oci/json_util.h"

namespace vtpm {

void validate_container_id(const std::string& id, const std::string& what) {
  if (id.empty()) throw Error(what + " is empty");
  if (id.size() > 1024) throw Error(what + " is longer than 1024 characters");
  if (id == "." || id == "..") throw Error(what + " may not be \".\" or \"..\"");
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == '+';
    if (!ok) throw Error(what + " has a character that is not [A-Za-z0-9_.+-]");
  }
}

OciState parse_oci_state(std::string_view json_text) {
  const auto doc = parse_json_object(json_text, "OCI state on stdin");
  OciState st;
  st.id = required_string(doc, "id", "OCI state");
  validate_container_id(st.id);
  st.status = optional_string(doc, "status", "OCI state").value_or("");
  st.bundle = required_string(doc, "bundle", "OCI state");
  check_absolute_path(st.bundle, "OCI state: \"bundle\"");
  if (auto it = doc.find("pid"); it != doc.end() && !it->is_null()) {
    if (!it->is_number_integer()) throw Error("OCI state: \"pid\" is not an integer");
    const auto pid = it->get<long long>();
    // crun passes "pid": 0 to poststop hooks: the container has no process any more.
    if (pid != 0 && (pid < 0 || pid > 4194304))
      throw Error("OCI state: \"pid\" " + std::to_string(pid) + " is out of range");
    if (pid != 0) st.pid = static_cast<pid_t>(pid);
  }
  st.annotations = string_map(doc, "annotations", "OCI state");
  return st;
}

}  // namespace vtpm
