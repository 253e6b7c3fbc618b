#include "oci/policy.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>

#include "common/error.h"
#include "common/io_util.h"
#include "common/pcr_banks.h"
#include "common/unique_fd.h"
#include "oci/json_util.h"
#include "oci/vtpm_request.h"

namespace vtpm {
namespace {

// "wrapperHookOptions": {"stateRoot": "/srv/tpm", "logLevel": "debug", ...} -> the hook's global
// options, in a fixed order. Paths are absolute; nothing here comes from a workload.
std::vector<std::string> parse_wrapper_hook_options(const nlohmann::json& v,
                                                    const std::string& what) {
  static const std::pair<const char*, const char*> kOptions[] = {
      {"stateRoot", "--state-root"}, {"runRoot", "--run-root"}, {"logFile", "--log-file"},
      {"logLevel", "--log-level"},   {"caKey", "--ca-key"},     {"caCert", "--ca-cert"}};
  const std::string w = what + ": \"wrapperHookOptions\"";
  if (!v.is_object()) throw Error(w + " is not an object");
  for (const auto& [k, x] : v.items()) {
    bool known = false;
    for (const auto& [key, opt] : kOptions) known |= k == key;
    if (!known) throw Error(w + " has an unknown key \"" + k + "\"");
    if (!x.is_string()) throw Error(w + ": \"" + k + "\" is not a string");
  }
  std::vector<std::string> args;
  for (const auto& [key, opt] : kOptions) {
    if (!v.contains(key)) continue;
    const auto& s = v.at(key).get_ref<const std::string&>();
    if (std::string_view(key) == "logLevel") {
      if (s != "trace" && s != "debug" && s != "info" && s != "warn" && s != "error" && s != "off")
        throw Error(w + ": \"logLevel\" must be trace, debug, info, warn, error or off");
      args.insert(args.end(), {opt, s});
    } else {
      args.insert(args.end(), {opt, normal_path(s, w + ": \"" + key + "\"")});
    }
  }
  return args;
}

// "statePathRoots"/"keyFileRoots": absolute directories, not "/".
std::vector<std::string> parse_roots(const nlohmann::json& v, const std::string& key,
                                     const std::string& what) {
  if (!v.is_array()) throw Error(what + ": \"" + key + "\" is not an array");
  std::vector<std::string> out;
  for (const auto& r : v) {
    if (!r.is_string()) throw Error(what + ": \"" + key + "\" has a non-string entry");
    out.push_back(normal_path(r.get<std::string>(), what + ": " + key));
  }
  return out;
}

}  // namespace

void check_vtpm_choice(const VtpmChoice& c, const std::string& what) {
  if (c.version == TpmVersion::V1_2 && (c.create_certs || !c.pcr_banks.empty()))
    throw Error(what + ": \"createCerts\" and \"pcrBanks\" need vtpmVersion \"2\"");
}

namespace {

// "cdiDevices": {"NAME": {"vtpmVersion": "2", "pcrBanks": "sha256", "createCerts": true}}
VtpmChoice parse_cdi_device(const nlohmann::json& e, const std::string& what) {
  if (!e.is_object()) throw Error(what + " is not an object");
  VtpmChoice c;
  for (const auto& [k, v] : e.items())
    if (k != "vtpmVersion" && k != "pcrBanks" && k != "createCerts")
      throw Error(what + ": unknown field \"" + k + "\" (vtpmVersion, pcrBanks, createCerts)");
  if (auto v = optional_string(e, "vtpmVersion", what)) {
    const auto parsed = parse_tpm_version(*v);
    if (!parsed)
      throw Error(what + ": \"vtpmVersion\" must be \"2\" or \"1.2\", not \"" + *v + "\"");
    c.version = *parsed;
  }
  if (auto b = optional_string(e, "pcrBanks", what)) c.pcr_banks = parse_pcr_banks(*b, what);
  c.create_certs = optional_bool(e, "createCerts", what).value_or(false);
  check_vtpm_choice(c, what);
  return c;
}

}  // namespace

Policy parse_policy(std::string_view json_text, const std::string& what) {
  const auto doc = parse_json_object(json_text, what);
  Policy p;
  bool image_auto = true;
  for (const auto& [k, v] : doc.items()) {
    if (k == "statePathRoots") {
      p.state_path_roots = parse_roots(v, k, what);
    } else if (k == "keyFileRoots") {
      p.key_file_roots = parse_roots(v, k, what);
    } else if (k == "annotationFields") {
      if (!v.is_array()) throw Error(what + ": \"annotationFields\" is not an array");
      p.annotation_fields.clear();
      for (const auto& f : v) {
        if (!f.is_string() || !vtpm_fields().count(f.get<std::string>()))
          throw Error(what + ": \"annotationFields\" has " + f.dump() +
                      ", which is not a linux.vtpms field");
        if (f == kOpenPlatformField)
          throw Error(what + ": \"annotationFields\" may not have \"" + kOpenPlatformField +
                      "\": a workload may not open its TPM's platform hierarchy");
        p.annotation_fields.insert(f.get<std::string>());
      }
    } else if (k == "cdiDevices") {
      if (!v.is_object()) throw Error(what + ": \"cdiDevices\" is not an object");
      for (const auto& [name, dev] : v.items())
        p.cdi_devices[name] = parse_cdi_device(dev, what + ": cdiDevices \"" + name + "\"");
    } else if (k == "kubernetesIdentity") {
      const std::string s = v.is_string() ? v.get<std::string>() : "";
      if (s == "containerd")
        p.kubernetes_identity = KubernetesIdentity::Containerd;
      else if (s == "cri-o")
        p.kubernetes_identity = KubernetesIdentity::CriO;
      else if (s != "off")
        throw Error(what + ": \"kubernetesIdentity\" must be \"containerd\", \"cri-o\" or \"off\"");
    } else if (k == "kubernetesIdentityIncludesPodUid") {
      if (!v.is_boolean())
        throw Error(what + ": \"kubernetesIdentityIncludesPodUid\" is not a boolean");
      p.kubernetes_pod_uid = v.get<bool>();
    } else if (k == "measurementPcr") {
      if (v.is_null()) {
        p.measurement_pcr.reset();
      } else {
        if (!v.is_number_unsigned() || !measurable_pcr(v.get<uint64_t>()))
          throw Error(what + ": \"measurementPcr\" must be null, 0-15 or 20-22 (16 and 23 " +
                      "can be reset by the workload, 17-19 not by the emulator)");
        p.measurement_pcr = v.get<unsigned>();
      }
    } else if (k == "measurementImage") {
      const std::string s = v.is_string() ? v.get<std::string>() : "";
      image_auto = s == "auto";
      if (s == "none")
        p.measurement_image = ImageSource::None;
      else if (s == "containerd")
        p.measurement_image = ImageSource::Containerd;
      else if (s == "cri-o")
        p.measurement_image = ImageSource::CriO;
      else if (!image_auto)
        throw Error(what + ": \"measurementImage\" must be \"auto\", \"none\", " +
                    "\"containerd\" or \"cri-o\"");
    } else if (k == "selfTest") {
      const std::string s = v.is_string() ? v.get<std::string>() : "";
      if (s != "onDemand" && s != "powerOn")
        throw Error(what + ": \"selfTest\" must be \"onDemand\" or \"powerOn\"");
      p.self_test_on_demand = s == "onDemand";
    } else if (k == "template") {
      const std::string s = v.is_string() ? v.get<std::string>() : "";
      if (s != "auto" && s != "off")
        throw Error(what + ": \"template\" must be \"auto\" or \"off\"");
      p.use_template = s == "auto";
    } else if (k == "templateIdleSeconds") {
      if (!v.is_number_unsigned() || v.get<uint64_t>() > 86400)
        throw Error(what + ": \"templateIdleSeconds\" must be 0 to 86400");
      p.template_idle_seconds = v.get<unsigned>();
    } else if (k == "runtime") {
      if (!v.is_string()) throw Error(what + ": \"runtime\" is not a string");
      p.runtime = normal_path(v.get<std::string>(), what + ": \"runtime\"");
    } else if (k == "wrapperHookOptions") {
      p.wrapper_hook_args = parse_wrapper_hook_options(v, what);
    } else {
      throw Error(what + ": unknown key \"" + k + "\"");
    }
  }
  if (p.kubernetes_pod_uid && p.kubernetes_identity == KubernetesIdentity::Off)
    throw Error(what + ": \"kubernetesIdentityIncludesPodUid\" needs \"kubernetesIdentity\"");
  if (image_auto)
    p.measurement_image = p.kubernetes_identity == KubernetesIdentity::Containerd
                              ? ImageSource::Containerd
                          : p.kubernetes_identity == KubernetesIdentity::CriO ? ImageSource::CriO
                                                                              : ImageSource::None;
  return p;
}

namespace {

// Absolute (against the working directory), lexically normal, no trailing '/'.
std::string lexical_path(const std::string& p) {
  std::string out = std::filesystem::absolute(p).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// The same through the symlinks that exist now (a root that is a link to /var/lib).
std::string resolved_path(const std::string& p) {
  std::error_code ec;
  const auto r = std::filesystem::weakly_canonical(p, ec);
  return ec ? lexical_path(p) : lexical_path(r.string());
}

}  // namespace

void check_policy_roots(const Policy& p, const HookDirs& dirs, const std::string& what) {
  std::vector<std::pair<std::string, std::string>> kept = {{"the state root", dirs.state_root},
                                                           {"the run root", dirs.run_root}};
  for (const auto& c : dirs.ca_dirs) kept.emplace_back("the CA's directory", c);
  for (const auto& [key, roots] : {std::pair{"statePathRoots", &p.state_path_roots},
                                   std::pair{"keyFileRoots", &p.key_file_roots}}) {
    for (const auto& r : *roots) {
      for (const auto& [name, dir] : kept) {
        if (dir.empty()) continue;
        std::string a = lexical_path(r), b = lexical_path(dir), how;
        if (!paths_overlap(a, b)) {
          a = resolved_path(r);
          b = resolved_path(dir);
          if (!paths_overlap(a, b)) continue;
          how = " (through symlinks: " + a + " and " + b + ")";
        }
        const char* verb = a == b ? "is" : a.size() < b.size() ? "contains" : "lies in";
        throw Error(what + ": \"" + key + "\" entry " + r + " " + verb + " " + name + " " + dir +
                    how + ", which no annotation may reach; name a directory of its own");
      }
    }
  }
}

Policy load_policy(const std::string& path, bool required) {
  const std::string what = "policy file " + path;
  struct stat st {};
  UniqueFd fd = open_regular_file(AT_FDCWD, path, what, st);
  if (!fd) {
    if (errno == ENOENT && !required) return Policy{};
    throw sys_error("cannot open " + what);
  }
  if (st.st_uid != 0) throw Error(what + " is not owned by root");
  if (st.st_mode & (S_IWGRP | S_IWOTH)) throw Error(what + " is writable by group or others");
  return parse_policy(read_all(fd.get(), 1u << 20, what), what);
}

}  // namespace vtpm
