#include "vtpm_hook/vtpm_request.h"

#include <filesystem>
#include <set>

#include "vtpm_hook/error.h"
#include "vtpm_hook/json_util.h"

namespace vtpm {
namespace {

constexpr unsigned kMaxVtpms = 8;

// Fields of the runtime-spec proposal that a later release implements.
const std::set<std::string> kNotYet = {"createCerts",
                                       "runAs",
                                       "pcrBanks",
                                       "encryptionKey",
                                       "encryptionPassword",
                                       "encryptionKeyFile",
                                       "encryptionPasswordFile"};
const std::set<std::string> kKnown = {"statePath", "statePathIsManaged", "vtpmVersion"};

TpmVersion parse_version(const std::string& s, const std::string& what) {
  if (s == "2" || s == "2.0") return TpmVersion::V2;
  if (s == "1.2") return TpmVersion::V1_2;
  throw Error(what + ": \"vtpmVersion\" must be \"2\" or \"1.2\", not \"" + s + "\"");
}

// Later TPMs nest inside the first one's directory: ids have no '/', so no other container's
// default can ever name the same directory.
std::string default_state_path(const RequestDefaults& d, const std::string& id, unsigned i) {
  return d.state_root + "/" + id + (i == 0 ? "" : "/tpm" + std::to_string(i));
}

VtpmSpec parse_entry(const nlohmann::json& e, unsigned i, const std::string& id,
                     const RequestDefaults& d) {
  const std::string what = "linux.vtpms[" + std::to_string(i) + "]";
  if (!e.is_object()) throw Error(what + " is not an object");
  for (const auto& [k, v] : e.items()) {
    if (kNotYet.count(k) && !v.is_null() && v != false && v != "")
      throw Error(what + ": \"" + k + "\" is not supported yet");
    if (!kKnown.count(k) && !kNotYet.count(k)) throw Error(what + ": unknown field \"" + k + "\"");
  }
  VtpmSpec s;
  s.index = i;
  if (auto v = optional_string(e, "vtpmVersion", what)) s.version = parse_version(*v, what);
  if (auto p = optional_string(e, "statePath", what)) {
    check_absolute_path(*p, what + ": \"statePath\"");
    s.state_path = std::filesystem::path(*p).lexically_normal().string();
    while (s.state_path.size() > 1 && s.state_path.back() == '/') s.state_path.pop_back();
    if (s.state_path == "/") throw Error(what + ": \"statePath\" may not be /");
  } else {
    s.state_path = default_state_path(d, id, i);
  }
  s.state_path_managed = optional_bool(e, "statePathIsManaged", what).value_or(false);
  return s;
}

}  // namespace

std::vector<VtpmSpec> resolve_vtpms(const OciState& state, const BundleConfig& config,
                                    const RequestDefaults& defaults) {
  std::vector<VtpmSpec> out;
  if (!config.vtpms) {
    VtpmSpec s;
    s.state_path = default_state_path(defaults, state.id, 0);
    out.push_back(s);
    return out;
  }
  const auto& arr = *config.vtpms;
  if (!arr.is_array()) throw Error("linux.vtpms is not an array");
  if (arr.size() > kMaxVtpms)
    throw Error("linux.vtpms has " + std::to_string(arr.size()) + " entries; at most " +
                std::to_string(kMaxVtpms) + " are supported");
  std::set<std::string> paths;
  for (unsigned i = 0; i < arr.size(); ++i) {
    auto s = parse_entry(arr[i], i, state.id, defaults);
    if (!paths.insert(s.state_path).second)
      throw Error("linux.vtpms[" + std::to_string(i) + "]: \"statePath\" " + s.state_path +
                  " is used twice");
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace vtpm
