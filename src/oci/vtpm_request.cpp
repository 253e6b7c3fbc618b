#include "oci/vtpm_request.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <climits>
#include <filesystem>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/io_util.h"
#include "common/pcr_banks.h"
#include "oci/json_util.h"

namespace vtpm {
namespace {

constexpr unsigned kMaxVtpms = 8;

// The single-vTPM annotations and the linux.vtpms field each one sets.
const std::pair<const char*, const char*> kFieldAnnotations[] = {
    {"io.vtpm-hook.state-path", "statePath"},
    {"io.vtpm-hook.create-certs", "createCerts"},
    {"io.vtpm-hook.pcr-banks", "pcrBanks"},
    {"io.vtpm-hook.run-as", "runAs"},
    {"io.vtpm-hook.state-path-is-managed", "statePathIsManaged"},
};

TpmVersion parse_version(const std::string& s, const std::string& what) {
  if (const auto v = parse_tpm_version(s)) return *v;
  throw Error(what + ": \"vtpmVersion\" must be \"2\" or \"1.2\", not \"" + s + "\"");
}

struct DefaultKey {
  std::string key;          // the container id, or <namespace>_<pod>_<container>[_<uid>]
  bool kubernetes = false;  // under <state-root>/kubernetes (policy kubernetesIdentity)
  bool sandbox = false;     // the pod's pause container: no TPM of its own
};

// "@tpm7", the longest suffix a later TPM's directory gets, fits beside a hashed name.
static_assert(kMaxVtpms <= 10);
static_assert(kKubernetesKeyPrefix + 1 + 2 * SHA256_DIGEST_LENGTH + sizeof "@tpm7" - 1 <= NAME_MAX);

// A Kubernetes key's directory name: <name><suffix> while that fits in NAME_MAX, so every name
// that worked before keeps its directory (and its TPM); a longer one (namespace, pod and
// container names may reach 63+253+63) becomes <prefix>+<SHA-256 of the whole name><suffix>.
// No Kubernetes name has a '+', so a hashed name is no other key's unhashed one; it is
// container-id-shaped, so gc treats it like the others.
std::string kubernetes_dir_name(const std::string& name, const std::string& suffix) {
  if (name.size() + suffix.size() <= NAME_MAX) return name + suffix;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_Digest(name.data(), name.size(), md, &md_len, EVP_sha256(), nullptr) != 1)
    throw Error("SHA-256 of the Kubernetes key " + name.substr(0, kKubernetesKeyPrefix) +
                "... failed");
  return name.substr(0, kKubernetesKeyPrefix) + "+" + to_hex(std::span(md, md_len)) + suffix;
}

// Later TPMs sit beside the first one, never inside a directory its runAs user owns. Ids are
// [A-Za-z0-9_.+-] (validate_container_id), so "<id>@tpm<i>" can be no other container's default.
std::string default_state_path(const RequestDefaults& d, const DefaultKey& key, unsigned i) {
  const std::string suffix = i == 0 ? "" : "@tpm" + std::to_string(i);
  const std::string path = d.state_root + "/" +
                           (key.kubernetes ? std::string(kKubernetesStateDir) + "/" +
                                                 kubernetes_dir_name(key.key, suffix)
                                           : key.key + suffix);
  bool reserved = i == 0 && !key.kubernetes && key.key == kKubernetesStateDir;
  for (const auto& r : d.reserved) reserved |= path == r;
  if (reserved)
    throw Error("container id \"" + key.key + "\" names " + path +
                ", which the hook keeps for itself; give this container a statePath");
  return path;
}

// The annotations a CRI runtime sets itself, after (so over) any a pod passes through
// (containerd: pkg/cri/server/container_create*.go; CRI-O: internal/factory/container, with the
// kubelet's labels last). The pod's infrastructure (pause) container gets no TPM: containerd
// marks it with container-type "sandbox"; CRI-O names it "POD" (its ContainerType annotation
// can be overwritten by a pod annotation there, the name cannot, and no container is "POD").
// The pod's UID comes the same way: containerd's own sandbox-uid, the kubelet's label in CRI-O.
struct CriKeys {
  const char* ns;
  const char* pod;
  const char* container;
  const char* uid;
  const char* sandbox_key;
  const char* sandbox_value;
};
constexpr CriKeys kContainerdKeys{
    "io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name",
    "io.kubernetes.cri.container-name",    "io.kubernetes.cri.sandbox-uid",
    "io.kubernetes.cri.container-type",    "sandbox"};
constexpr CriKeys kCrioKeys{"io.kubernetes.pod.namespace",  "io.kubernetes.pod.name",
                            "io.kubernetes.container.name", "io.kubernetes.pod.uid",
                            "io.kubernetes.container.name", "POD"};

// What the API server allows in these names (DNS-1123 labels, the pod's a subdomain): then
// '_' cannot occur in them and <namespace>_<pod>_<container> names one container only.
void check_kubernetes_name(const std::string& v, size_t max, bool dots, const std::string& what) {
  const auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  bool ok = !v.empty() && v.size() <= max && alnum(v.front()) && alnum(v.back());
  for (char c : v) ok = ok && (alnum(c) || c == '-' || (dots && c == '.'));
  if (!ok) throw Error("annotation " + what + " is not a Kubernetes name: \"" + v + "\"");
}

DefaultKey default_state_key(const std::string& id, const std::map<std::string, std::string>& ann,
                             const Policy& policy) {
  if (policy.kubernetes_identity == KubernetesIdentity::Off) return {id};
  const CriKeys& k =
      policy.kubernetes_identity == KubernetesIdentity::Containerd ? kContainerdKeys : kCrioKeys;
  const auto get = [&](const char* name) {
    const auto it = ann.find(name);
    return it == ann.end() ? std::optional<std::string>() : it->second;
  };
  if (get(k.sandbox_key) == k.sandbox_value) return {id, false, true};
  const auto ns = get(k.ns), pod = get(k.pod), container = get(k.container);
  if (!ns || !pod || !container) return {id};  // not a Kubernetes container
  check_kubernetes_name(*ns, 63, false, k.ns);
  check_kubernetes_name(*pod, 253, true, k.pod);
  check_kubernetes_name(*container, 63, false, k.container);
  std::string key = *ns + "_" + *pod + "_" + *container;
  if (policy.kubernetes_pod_uid) {
    // A UUID from the API server, or a static pod's 32 hex digits: a DNS label's characters.
    // Three '_' instead of two: no name-only key is ever equal to one with a UID.
    const auto uid = get(k.uid);
    if (!uid)
      throw Error(std::string("annotation ") + k.uid +
                  " is missing; the policy's kubernetesIdentityIncludesPodUid needs it");
    check_kubernetes_name(*uid, 64, false, k.uid);
    key += "_" + *uid;
  }
  return {key, true};
}

bool is_beneath(const std::string& path, const std::string& root) {
  return path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
         (root == "/" || path[root.size()] == '/');
}

// What no annotation's path may reach, named for errors: the state root (every container's
// default state), the run root and the reserved (CA) directories.
std::vector<std::pair<std::string, std::string>> kept_from_annotations(const RequestDefaults& d) {
  std::vector<std::pair<std::string, std::string>> out;
  const auto add = [&](const char* name, const std::string& p) {
    if (p.empty()) return;
    std::string n = std::filesystem::path(p).lexically_normal().string();
    while (n.size() > 1 && n.back() == '/') n.pop_back();
    out.emplace_back(name, n);
  };
  add("the state root", d.state_root);
  add("the run root", d.run_root);
  for (const auto& r : d.reserved) add("the CA's directory", r);
  return out;
}

// An annotation's path may not be, contain or lie in one of them, whatever roots the policy
// names (load refuses roots that overlap them; this holds for any Policy).
void check_out_of_reach(const std::string& path, const std::string& field, const RequestDefaults& d,
                        const std::string& what) {
  for (const auto& [name, dir] : kept_from_annotations(d))
    if (paths_overlap(path, dir))
      throw Error(what + ": \"" + field + "\" " + path + " reaches " + name + " " + dir +
                  ", which no annotation may reach");
}

// Config values end up in logs, status tables and paths: no control characters anywhere.
void check_printable(const nlohmann::json& e, const std::string& what) {
  for (const auto& [k, v] : e.items()) {
    if (!v.is_string()) continue;
    for (unsigned char c : v.get_ref<const std::string&>())
      if (c < 0x20 || c == 0x7f) throw Error(what + ": \"" + k + "\" contains a control character");
  }
}

// The allowed root a statePath lies strictly beneath. Paths from annotations may only use the
// administrator's extra roots: the state root holds every container's default state and the CA.
std::string allowed_root(const std::string& path, const RequestDefaults& d, bool by_annotation,
                         const std::string& what) {
  std::vector<std::string> roots;
  if (!by_annotation) roots.push_back(d.state_root);
  for (const auto& r : d.policy.state_path_roots) roots.push_back(r);
  std::string names;
  for (const auto& r : roots) {
    if (!is_beneath(path, r)) {
      names += (names.empty() ? "" : ", ") + r;
      continue;
    }
    for (const auto& k : d.reserved)
      if (paths_overlap(path, k))
        throw Error(what + ": \"statePath\" " + path + " overlaps " + k +
                    ", which the hook keeps for itself");
    if (by_annotation) check_out_of_reach(path, "statePath", d, what);
    return r;
  }
  throw Error(what + ": \"statePath\" " + path + " is not under an allowed state root (" +
              (names.empty() ? "none for annotations; see the policy's statePathRoots" : names) +
              ")");
}

// encryptionKeyFile/encryptionPasswordFile: never in the state root, the run root or the CA's
// directory (another tenant's key, the CA's key as a password), whoever names it; from an
// annotation, only strictly beneath a policy keyFileRoots entry.
std::string key_file_path(const std::string& value, const std::string& field,
                          const RequestDefaults& d, bool by_annotation, const std::string& what) {
  const std::string path = normal_path(value, what + ": \"" + field + "\"");
  for (const auto& [name, dir] : kept_from_annotations(d))
    if (path == dir || is_beneath(path, dir))
      throw Error(what + ": \"" + field + "\" " + path + " lies in " + name + " " + dir +
                  ", where no key file may be");
  if (!by_annotation) return path;
  std::string names;
  for (const auto& r : d.policy.key_file_roots) {
    if (is_beneath(path, r)) return path;
    names += (names.empty() ? "" : ", ") + r;
  }
  throw Error(what + ": \"" + field + "\" " + path + " is not under a policy keyFileRoots entry (" +
              (names.empty() ? "none" : names) + ")");
}

}  // namespace

std::string container_state_path(const RequestDefaults& d, const std::string& id, unsigned index) {
  validate_container_id(id, "--id");
  return default_state_path(d, DefaultKey{id, false}, index);
}

bool paths_overlap(const std::string& a, const std::string& b) {
  return a == b || is_beneath(a, b) || is_beneath(b, a);
}

const std::set<std::string>& vtpm_fields() {
  static const std::set<std::string> fields = {
      "statePath",       "statePathIsManaged", "vtpmVersion",       "createCerts",
      "runAs",           "pcrBanks",           "encryptionKeyFile", "encryptionPasswordFile",
      kOpenPlatformField};
  return fields;
}

std::string normal_path(const std::string& p, const std::string& what) {
  check_absolute_path(p, what);
  std::string out = std::filesystem::path(p).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  if (out == "/") throw Error(what + " may not be /");
  return out;
}

std::vector<std::string> parse_pcr_banks(const std::string& list, const std::string& what) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string b; std::getline(ss, b, ',');) {
    if (!pcr_bank_alg(b))
      throw Error(what + ": unknown PCR bank \"" + b +
                  "\" (sha1, sha256, sha384, sha512, sm3_256)");
    for (const auto& seen : out)
      if (seen == b) throw Error(what + ": PCR bank \"" + b + "\" is listed twice");
    out.push_back(b);
  }
  if (out.empty()) throw Error(what + ": \"pcrBanks\" is empty");
  return out;
}

namespace {

void check_run_as(const std::string& user, const std::string& what) {
  if (user.empty() || user.size() > 64 ||
      user.find_first_of(std::string_view(" \n\t/\0", 5)) != std::string::npos)
    throw Error(what + ": \"runAs\" is not a user name or uid[:gid]");
}

VtpmSpec parse_entry(const nlohmann::json& e, unsigned i, const DefaultKey& key,
                     const RequestDefaults& d, bool by_annotation, const std::string& what) {
  if (!e.is_object()) throw Error(what + " is not an object");
  for (const auto& [k, v] : e.items()) {
    if (!vtpm_fields().count(k)) throw Error(what + ": unknown field \"" + k + "\"");
    if (by_annotation && !d.policy.annotation_fields.count(k)) {
      std::string allowed;
      for (const auto& f : d.policy.annotation_fields) allowed += (allowed.empty() ? "" : ", ") + f;
      throw Error(what + ": \"" + k +
                  "\" may not come from an annotation (policy annotationFields: " +
                  (allowed.empty() ? "none" : allowed) + ")");
    }
  }
  check_printable(e, what);
  VtpmSpec s;
  s.index = i;
  if (auto v = optional_string(e, "vtpmVersion", what)) s.version = parse_version(*v, what);
  if (auto p = optional_string(e, "statePath", what)) {
    s.state_path = normal_path(*p, what + ": \"statePath\"");
    s.state_root = allowed_root(s.state_path, d, by_annotation, what);
  } else {
    s.state_path = default_state_path(d, key, i);
    s.state_root = d.state_root;
  }
  s.state_path_managed = optional_bool(e, "statePathIsManaged", what).value_or(false);
  s.create_certs = optional_bool(e, "createCerts", what).value_or(false);
  s.open_platform = optional_bool(e, kOpenPlatformField, what).value_or(false);
  if (auto b = optional_string(e, "pcrBanks", what)) s.pcr_banks = parse_pcr_banks(*b, what);
  if (auto u = optional_string(e, "runAs", what)) {
    check_run_as(*u, what);
    s.run_as = *u;
  }
  if (auto k = optional_string(e, "encryptionKeyFile", what))
    s.key_file = key_file_path(*k, "encryptionKeyFile", d, by_annotation, what);
  if (auto k = optional_string(e, "encryptionPasswordFile", what))
    s.password_file = key_file_path(*k, "encryptionPasswordFile", d, by_annotation, what);
  if (s.key_file && s.password_file)
    throw Error(what + ": give \"encryptionKeyFile\" or \"encryptionPasswordFile\", not both");
  check_vtpm_choice({s.version, s.pcr_banks, s.create_certs}, what);
  if (s.version == TpmVersion::V1_2 && s.open_platform)
    throw Error(what + ": \"" + kOpenPlatformField + "\" needs vtpmVersion \"2\"");
  return s;
}

// Runtime annotations win over config.json's (runc copies the latter into the former anyway).
std::map<std::string, std::string> merged_annotations(const OciState& state,
                                                      const BundleConfig& config) {
  auto out = config.annotations;
  for (const auto& [k, v] : state.annotations) out[k] = v;
  return out;
}

// io.vtpm-hook.vtpm and its field annotations as one linux.vtpms entry.
nlohmann::json entry_from_annotations(const std::map<std::string, std::string>& ann) {
  nlohmann::json e = nlohmann::json::object();
  const auto version = ann.find(kAnnotationVtpm);
  if (!parse_tpm_version(version->second))
    throw Error(std::string("annotation ") + kAnnotationVtpm +
                " must be \"2\", \"1.2\" or \"none\", not \"" + version->second + "\"");
  e["vtpmVersion"] = version->second;
  for (const auto& [name, field] : kFieldAnnotations) {
    auto it = ann.find(name);
    if (it == ann.end()) continue;
    if (std::string(field) == "createCerts" || std::string(field) == "statePathIsManaged") {
      if (it->second != "true" && it->second != "false")
        throw Error(std::string("annotation ") + name + " must be \"true\" or \"false\"");
      e[field] = it->second == "true";
    } else {
      e[field] = it->second;
    }
  }
  return e;
}

}  // namespace

std::vector<VtpmSpec> resolve_vtpms(const OciState& state, const BundleConfig& config,
                                    const RequestDefaults& defaults) {
  const auto ann = merged_annotations(state, config);
  const bool single = ann.count(kAnnotationVtpm) > 0, many = ann.count(kAnnotationVtpms) > 0;
  bool field_annotations = false;
  for (const auto& [name, field] : kFieldAnnotations) field_annotations |= ann.count(name) > 0;
  if (single && many)
    throw Error(std::string("annotations ") + kAnnotationVtpm + " and " + kAnnotationVtpms +
                " exclude each other");
  if (field_annotations && !single)
    throw Error(std::string("io.vtpm-hook.* field annotations need ") + kAnnotationVtpm);
  if (config.vtpms && (single || many))
    throw Error("config.json has linux.vtpms and io.vtpm-hook annotations: use one of them");
  if (single && ann.at(kAnnotationVtpm) == kNoVtpm) {
    if (field_annotations)
      throw Error(std::string("annotation ") + kAnnotationVtpm +
                  " is \"none\": the io.vtpm-hook.* field annotations have no TPM to configure");
    return {};
  }

  const DefaultKey key = default_state_key(state.id, ann, defaults.policy);
  nlohmann::json arr;
  std::string what = "linux.vtpms";
  if (config.vtpms) {
    arr = *config.vtpms;
  } else if (many) {
    what = std::string("annotation ") + kAnnotationVtpms;
    const std::string wrapped = "{\"vtpms\":" + ann.at(kAnnotationVtpms) + "}";
    arr = std::move(parse_json_object(wrapped, what)["vtpms"]);
  } else if (single) {
    what = std::string("annotations ") + kAnnotationVtpm + "*";
    arr = nlohmann::json::array({entry_from_annotations(ann)});
  } else {
    if (key.sandbox) return {};  // the pause container: the pod's containers get the TPMs
    VtpmSpec s;
    s.state_path = default_state_path(defaults, key, 0);
    s.state_root = defaults.state_root;
    s.version = defaults.vtpm.version;
    s.pcr_banks = defaults.vtpm.pcr_banks;
    s.create_certs = defaults.vtpm.create_certs;
    return {s};
  }
  if (!arr.is_array()) throw Error(what + " is not an array");
  if (arr.size() > kMaxVtpms)
    throw Error(what + " has " + std::to_string(arr.size()) + " entries; at most " +
                std::to_string(kMaxVtpms) + " are supported");
  std::vector<VtpmSpec> out;
  std::set<std::string> paths;
  for (unsigned i = 0; i < arr.size(); ++i) {
    const std::string entry = what + "[" + std::to_string(i) + "]";
    auto s = parse_entry(arr[i], i, key, defaults, !config.vtpms, entry);
    if (!paths.insert(s.state_path).second)
      throw Error(entry + ": \"statePath\" " + s.state_path + " is used twice");
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace vtpm
