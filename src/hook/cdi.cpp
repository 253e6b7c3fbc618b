#include "hook/cdi.h"

#include <sys/stat.h>

#include <filesystem>
#include <set>

#include "common/error.h"
#include "common/io_util.h"

namespace vtpm {
namespace {

using nlohmann::json;

// The Go library's character classes: ASCII only.
bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_alnum(char c) { return is_letter(c) || (c >= '0' && c <= '9'); }

// First character `first`, last alphanumeric, the ones between alphanumeric or in `middle`.
void check_name(const std::string& name, bool (*first)(char), const std::string& middle,
                const std::string& what) {
  if (name.empty()) throw Error("CDI spec: empty " + what);
  bool ok = first(name.front()) && is_alnum(name.back());
  for (size_t i = 1; ok && i + 1 < name.size(); ++i)
    ok = is_alnum(name[i]) || middle.find(name[i]) != std::string::npos;
  if (!ok) throw Error("CDI spec: invalid " + what + " \"" + name + "\"");
}

// Strict decoding (yaml.UnmarshalStrict in v0.5.x): a field 0.5.0 does not know is an error.
void check_keys(const json& obj, const std::set<std::string>& known, const std::string& what) {
  if (!obj.is_object()) throw Error("CDI spec: " + what + " is not an object");
  for (const auto& [k, v] : obj.items())
    if (!known.count(k)) throw Error("CDI spec: " + what + " has unknown field \"" + k + "\"");
}

const json& string_field(const json& obj, const char* key, bool required, const std::string& what) {
  static const json none;
  const auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) throw Error("CDI spec: " + what + " has no \"" + key + "\"");
    return none;
  }
  if (!it->is_string()) throw Error("CDI spec: " + what + " \"" + key + "\" is not a string");
  if (required && it->get_ref<const std::string&>().empty())
    throw Error("CDI spec: " + what + " \"" + key + "\" is empty");
  return *it;
}

void check_strings(const json& obj, const char* key, const std::string& what, bool env) {
  const auto it = obj.find(key);
  if (it == obj.end()) return;
  if (!it->is_array()) throw Error("CDI spec: " + what + " \"" + key + "\" is not an array");
  for (const auto& s : *it) {
    if (!s.is_string())
      throw Error("CDI spec: " + what + " \"" + key + "\" has a non-string entry");
    const auto eq = s.get_ref<const std::string&>().find('=');
    if (env && (eq == std::string::npos || eq == 0))
      throw Error("CDI spec: " + what + " has invalid environment variable " + s.dump());
  }
}

void check_hook(const json& h, const std::string& what) {
  static const std::set<std::string> names = {"prestart",       "createRuntime", "createContainer",
                                              "startContainer", "poststart",     "poststop"};
  check_keys(h, {"hookName", "path", "args", "env", "timeout"}, what);
  const auto& name = string_field(h, "hookName", true, what);
  if (!names.count(name.get<std::string>()))
    throw Error("CDI spec: " + what + " has invalid hook name " + name.dump());
  if (string_field(h, "path", true, what).get_ref<const std::string&>().front() != '/')
    throw Error("CDI spec: " + what + " \"path\" is not absolute");
  check_strings(h, "args", what, false);
  check_strings(h, "env", what, true);
  if (const auto t = h.find("timeout");
      t != h.end() && (!t->is_number_unsigned() || *t > 0xffffffffu))
    throw Error("CDI spec: " + what + " \"timeout\" is not a uint32");
}

// Returns whether the edits change anything (a device's must; the spec's may be empty).
bool check_edits(const json& e, const std::string& what) {
  check_keys(e, {"env", "deviceNodes", "hooks", "mounts"}, what);
  check_strings(e, "env", what, true);
  bool any = e.contains("env") && !e["env"].empty();
  for (const char* list : {"deviceNodes", "hooks", "mounts"}) {
    const auto it = e.find(list);
    if (it == e.end()) continue;
    if (!it->is_array()) throw Error("CDI spec: " + what + " \"" + list + "\" is not an array");
    any |= !it->empty();
    for (size_t i = 0; i < it->size(); ++i) {
      const std::string w = what + " " + list + "[" + std::to_string(i) + "]";
      const json& x = (*it)[i];
      if (std::string(list) == "hooks") {
        check_hook(x, w);
      } else if (std::string(list) == "mounts") {
        check_keys(x, {"hostPath", "containerPath", "options", "type"}, w);
        string_field(x, "hostPath", true, w);
        string_field(x, "containerPath", true, w);
        check_strings(x, "options", w, false);
      } else {
        check_keys(
            x,
            {"path", "hostPath", "type", "major", "minor", "fileMode", "permissions", "uid", "gid"},
            w);
        string_field(x, "path", true, w);
      }
    }
  }
  return any;
}

// The OCI hook's args: argv[0], the global options, the subcommand and its options.
json hook(const CdiOptions& o, const char* stage, const std::vector<std::string>& command) {
  std::vector<std::string> args = {"vtpm-hook"};
  args.insert(args.end(), o.global_args.begin(), o.global_args.end());
  args.insert(args.end(), command.begin(), command.end());
  return {{"hookName", stage}, {"path", o.hook_path}, {"args", args}};
}

std::vector<std::string> setup_command(const CdiOptions& o, const VtpmChoice& tpm) {
  std::vector<std::string> cmd = {"setup", "--default-version", to_string(tpm.version)};
  if (!tpm.pcr_banks.empty()) {
    std::string banks;
    for (const auto& b : tpm.pcr_banks) banks += (banks.empty() ? "" : ",") + b;
    cmd.insert(cmd.end(), {"--default-pcr-banks", banks});
  }
  if (tpm.create_certs) cmd.push_back("--default-create-certs");
  cmd.insert(cmd.end(), o.setup_args.begin(), o.setup_args.end());
  return cmd;
}

}  // namespace

std::vector<CdiDevice> cdi_devices(const Policy& policy) {
  std::vector<CdiDevice> out = {{"2", {TpmVersion::V2, {}, false}},
                                {"1.2", {TpmVersion::V1_2, {}, false}}};
  for (const auto& [name, tpm] : policy.cdi_devices) {
    if (name == "2" || name == "1.2")
      throw Error("policy: cdiDevices \"" + name + "\" is one of the built-in devices 2 and 1.2");
    out.push_back({name, tpm});
  }
  return out;
}

json make_cdi_spec(const CdiOptions& o) {
  json devices = json::array();
  for (const auto& d : o.devices) {
    check_vtpm_choice(d.tpm, "CDI device \"" + d.name + "\"");
    const json hooks = {hook(o, "createRuntime", setup_command(o, d.tpm)),
                        hook(o, "poststop", {"teardown"})};
    devices.push_back({{"name", d.name}, {"containerEdits", {{"hooks", hooks}}}});
  }
  json spec = {{"cdiVersion", kCdiVersion}, {"kind", kCdiKind}, {"devices", devices}};
  validate_cdi_spec(spec);
  return spec;
}

void install_cdi_spec(const std::string& path, const std::string& text) {
  const auto dir = std::filesystem::absolute(path).parent_path();
  std::error_code ec;
  const bool made = std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("cannot create " + dir.string() + ": " + ec.message());
  if (made && ::chmod(dir.c_str(), 0755) != 0) throw sys_error("chmod " + dir.string());
  write_file_atomic(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  if (::chmod(path.c_str(), 0644) != 0) throw sys_error("chmod " + path);
}

void validate_cdi_spec(const json& spec) {
  check_keys(spec, {"cdiVersion", "kind", "devices", "containerEdits"}, "the spec");
  static const std::set<std::string> versions = {"0.3.0", "0.4.0", "0.5.0"};
  const auto& version = string_field(spec, "cdiVersion", true, "the spec");
  if (!versions.count(version.get<std::string>()))
    throw Error("CDI spec: cdiVersion " + version.dump() + " is not one podman 4.3 reads");
  const std::string kind = string_field(spec, "kind", true, "the spec").get<std::string>();
  const auto slash = kind.find('/');
  if (slash == std::string::npos || kind.find('/', slash + 1) != std::string::npos)
    throw Error("CDI spec: kind \"" + kind + "\" is not vendor/class");
  check_name(kind.substr(0, slash), is_letter, "_-.", "vendor");
  check_name(kind.substr(slash + 1), is_letter, "_-", "class");
  if (spec.contains("containerEdits")) check_edits(spec["containerEdits"], "the spec's edits");
  const auto devices = spec.find("devices");
  if (devices == spec.end() || !devices->is_array())
    throw Error("CDI spec: \"devices\" is missing or not an array");
  if (devices->empty()) throw Error("CDI spec: no devices");
  std::set<std::string> seen;
  for (const auto& d : *devices) {
    check_keys(d, {"name", "containerEdits"}, "a device");
    const std::string name = string_field(d, "name", true, "a device").get<std::string>();
    const std::string what = "device \"" + name + "\"";
    check_name(name, is_alnum, "_-.:", "device name");
    // 0.3.0 and 0.4.0 wanted a letter first
    if (!is_letter(name.front()) && version != "0.5.0")
      throw Error("CDI spec: " + what + " starts with a digit, which needs cdiVersion 0.5.0");
    if (!seen.insert(name).second) throw Error("CDI spec: " + what + " appears twice");
    if (!d.contains("containerEdits")) throw Error("CDI spec: " + what + " has no containerEdits");
    if (!check_edits(d["containerEdits"], what + " edits"))
      throw Error("CDI spec: " + what + " has empty containerEdits");
  }
}

}  // namespace vtpm
