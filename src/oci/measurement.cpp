#include "oci/measurement.h"

// SHA*_Init & co.: deprecated in OpenSSL 3, used on purpose (kBankHashes)
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <iterator>
#include <set>
#include <span>

#include "common/error.h"
#include "common/io_util.h"
#include "common/pcr_banks.h"

namespace vtpm {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxSafeInteger =
    (uint64_t{1} << 53) - 1;  // RFC 8785 / I-JSON: exact in a double

// H_bank(data) of each PCR bank of kPcrBanks, by TPM_ALG_ID. The SHA banks through OpenSSL's
// low-level functions: its EVP interface loads and indexes the default provider at first use,
// which was most of a setup's hashing (about 0.8 ms natively, tens of ms under emulation) and on
// its critical path. SM3 has only EVP (the default provider).
template <typename Ctx, int (*Init)(Ctx*), int (*Update)(Ctx*, const void*, size_t),
          int (*Final)(unsigned char*, Ctx*), size_t Size>
std::vector<uint8_t> low_level(std::string_view data) {
  Ctx ctx;
  std::vector<uint8_t> out(Size);
  if (Init(&ctx) != 1 || Update(&ctx, data.data(), data.size()) != 1 ||
      Final(out.data(), &ctx) != 1)
    throw Error("a digest failed (OpenSSL)");
  return out;
}

std::vector<uint8_t> sm3(std::string_view data) {
  std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sm3(), nullptr) != 1)
    throw Error("the sm3_256 digest failed (OpenSSL)");
  out.resize(len);
  return out;
}

struct BankHash {
  uint16_t alg;
  std::vector<uint8_t> (*digest)(std::string_view);
};
constexpr BankHash kBankHashes[] = {
    {TPM2_ALG_SHA1, low_level<SHA_CTX, SHA1_Init, SHA1_Update, SHA1_Final, SHA_DIGEST_LENGTH>},
    {TPM2_ALG_SHA256,
     low_level<SHA256_CTX, SHA256_Init, SHA256_Update, SHA256_Final, SHA256_DIGEST_LENGTH>},
    {TPM2_ALG_SHA384,
     low_level<SHA512_CTX, SHA384_Init, SHA384_Update, SHA384_Final, SHA384_DIGEST_LENGTH>},
    {TPM2_ALG_SHA512,
     low_level<SHA512_CTX, SHA512_Init, SHA512_Update, SHA512_Final, SHA512_DIGEST_LENGTH>},
    {TPM2_ALG_SM3_256, sm3}};
static_assert(std::size(kBankHashes) == std::size(kPcrBanks), "a digest for every PCR bank");

const BankHash& bank_hash(std::string_view bank) {
  if (const auto alg = pcr_bank_alg(bank))
    for (const auto& h : kBankHashes)
      if (h.alg == *alg) return h;
  throw Error("unknown PCR bank \"" + one_line(bank) + "\"");
}

// UTF-16 code units of valid UTF-8 (checked by the caller's strict dump): the JCS member order.
std::u16string utf16(std::string_view s) {
  std::u16string out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    char32_t cp = len == 1 ? c : c & (0x7f >> len);
    for (size_t k = 1; k < len && i + k < s.size(); ++k)
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out += static_cast<char16_t>(0xd800 + (cp >> 10));
      out += static_cast<char16_t>(0xdc00 + (cp & 0x3ff));
    } else {
      out += static_cast<char16_t>(cp);
    }
    i += len;
  }
  return out;
}

// The RFC 8785 writer. `path` names the value being written, for error messages.
class Jcs {
 public:
  explicit Jcs(bool refuse_integral_floats) : refuse_integral_floats_(refuse_integral_floats) {}

  std::string text(const json& v) {
    write(v);
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw Error("canonical JSON of " + (path_.empty() ? std::string("the document") : path_) +
                ": " + why);
  }

  // JSON string text: escapes only " \ and U+0000-U+001F, the rest as UTF-8 (RFC 8785 3.2.2.2).
  std::string string_text(const json& s) const {
    try {
      return s.dump(-1, ' ', false, json::error_handler_t::strict);
    } catch (const json::exception&) {
      fail("a string is not valid UTF-8");
    }
  }

  void write(const json& v) {
    switch (v.type()) {
      case json::value_t::object: {
        struct Member {
          std::u16string order;
          std::string name;  // JSON text of the name
          const std::string* key;
          const json* value;
        };
        std::vector<Member> members;
        members.reserve(v.size());
        for (auto it = v.begin(); it != v.end(); ++it) {
          std::string name = string_text(json(it.key()));
          members.push_back({utf16(it.key()), std::move(name), &it.key(), &it.value()});
        }
        std::sort(members.begin(), members.end(),
                  [](const Member& a, const Member& b) { return a.order < b.order; });
        out_ += '{';
        for (size_t i = 0; i < members.size(); ++i) {
          if (i) out_ += ',';
          out_ += members[i].name;
          out_ += ':';
          const size_t len = path_.size();
          path_ += (len ? "." : "") + one_line(*members[i].key);
          write(*members[i].value);
          path_.resize(len);
        }
        out_ += '}';
        return;
      }
      case json::value_t::array:
        out_ += '[';
        for (size_t i = 0; i < v.size(); ++i) {
          if (i) out_ += ',';
          const size_t len = path_.size();
          path_ += "[" + std::to_string(i) + "]";
          write(v[i]);
          path_.resize(len);
        }
        out_ += ']';
        return;
      case json::value_t::string:
        out_ += string_text(v);
        return;
      case json::value_t::boolean:
        out_ += v.get<bool>() ? "true" : "false";
        return;
      case json::value_t::null:
        out_ += "null";
        return;
      case json::value_t::number_integer: {
        const auto n = v.get<int64_t>();
        const bool exact = n >= -static_cast<int64_t>(kMaxSafeInteger) &&
                           n <= static_cast<int64_t>(kMaxSafeInteger);
        out_ += exact ? std::to_string(n) : '"' + std::to_string(n) + '"';
        return;
      }
      case json::value_t::number_unsigned: {
        const auto n = v.get<uint64_t>();
        out_ += n <= kMaxSafeInteger ? std::to_string(n) : '"' + std::to_string(n) + '"';
        return;
      }
      case json::value_t::number_float: {
        const auto x = v.get<double>();
        if (!std::isfinite(x)) fail("NaN and Infinity have no JSON form");
        if (refuse_integral_floats_ && x == std::trunc(x) &&
            std::fabs(x) >= static_cast<double>(kMaxSafeInteger + 1))
          fail("the number " + es6_number(x) +
               " is integral and >= 2^53 (an integer out of range?): no exact form");
        out_ += es6_number(x);
        return;
      }
      case json::value_t::binary:
      case json::value_t::discarded:
        fail("not a JSON value");
    }
    fail("not a JSON value");
  }

  bool refuse_integral_floats_;
  std::string out_;
  std::string path_;
};

// Mount types whose source is a conventional name, the same on every host (design 1.2).
constexpr std::string_view kNamedSourceTypes[] = {
    "proc",  "sysfs",     "tmpfs",      "devpts",  "mqueue",  "cgroup", "cgroup2",
    "ramfs", "hugetlbfs", "securityfs", "debugfs", "tracefs", "bpf",    "binfmt_misc"};
// overlay options naming host paths
constexpr std::string_view kOverlayPathOptions[] = {
    "lowerdir=", "upperdir=", "workdir=", "datadir="};

// process: what runs, then its rights; linux: devices, MAC, isolation (design 1.1). The rest of
// process is stdio and scheduling, the rest of linux host paths, ids and quotas.
constexpr const char* kProcessFields[] = {"args",
                                          "commandLine",
                                          "env",
                                          "cwd",
                                          "user",
                                          "capabilities",
                                          "rlimits",
                                          "noNewPrivileges",
                                          "apparmorProfile",
                                          "selinuxLabel"};
constexpr const char* kLinuxFields[] = {"devices",    "maskedPaths",       "readonlyPaths",
                                        "sysctl",     "rootfsPropagation", "mountLabel",
                                        "personality"};

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

// obj.outer.inner, if obj and obj.outer are objects and it is there
const json* member(const json& obj, const char* outer, const char* inner) {
  const json* o = member(obj, outer);
  return o ? member(*o, inner) : nullptr;
}

bool has_string(const json& array, std::string_view s) {
  if (!array.is_array()) return false;
  return std::any_of(array.begin(), array.end(), [&](const json& e) {
    return e.is_string() && e.get_ref<const std::string&>() == s;
  });
}

json project_mount(const json& m) {
  if (!m.is_object()) return m;
  json out = json::object();
  for (const char* k : {"destination", "type", "options", "uidMappings", "gidMappings"})
    if (const json* f = member(m, k)) out[k] = *f;
  const json* type = member(m, "type");
  const std::string t = type && type->is_string() ? type->get<std::string>() : "";
  const json* options = member(m, "options");
  // runc and crun bind-mount whatever the type says when the options have bind or rbind
  const bool bind =
      t == "bind" || (options && (has_string(*options, "bind") || has_string(*options, "rbind")));
  if (const json* source = member(m, "source");
      source && !bind &&
      std::find(std::begin(kNamedSourceTypes), std::end(kNamedSourceTypes), t) !=
          std::end(kNamedSourceTypes))
    out["source"] = *source;
  if (t == "overlay" && options && options->is_array()) {
    json kept = json::array();
    for (const json& o : *options) {
      const bool host_path =
          o.is_string() && std::any_of(std::begin(kOverlayPathOptions),
                                       std::end(kOverlayPathOptions), [&](std::string_view p) {
                                         return o.get_ref<const std::string&>().starts_with(p);
                                       });
      if (!host_path) kept.push_back(o);
    }
    out["options"] = std::move(kept);
  }
  return out;
}

// A joined namespace's path is host-specific; that it is joined is what matters.
json project_namespace(const json& ns) {
  if (!ns.is_object()) return ns;
  json out = json::object();
  if (const json* type = member(ns, "type")) out["type"] = *type;
  if (member(ns, "path")) out["joined"] = true;
  return out;
}

json project_array(const json& v, json (*project)(const json&)) {
  if (!v.is_array()) return v;
  json out = json::array();
  for (const json& e : v) out.push_back(project(e));
  return out;
}

constexpr std::string_view kContainerdImageKeys[] = {"io.kubernetes.cri.image-name",
                                                     "io.kubernetes.cri.podsandbox.image-name"};
constexpr std::string_view kCriOImageKeys[] = {
    "io.kubernetes.cri-o.Image", "io.kubernetes.cri-o.ImageName", "io.kubernetes.cri-o.ImageRef",
    "io.kubernetes.cri-o.ImageRepoDigests"};

std::span<const std::string_view> image_keys(ImageSource s) {
  switch (s) {
    case ImageSource::Containerd:
      return kContainerdImageKeys;
    case ImageSource::CriO:
      return kCriOImageKeys;
    case ImageSource::None:
      break;
  }
  return {};
}

LaunchEvent make_event(json content) {
  LaunchEvent e;
  e.canonical = canonical_json(content);
  e.content = std::move(content);
  return e;
}

}  // namespace

std::string es6_number(double x) {
  if (!std::isfinite(x)) throw Error("canonical JSON: NaN and Infinity have no JSON form");
  if (x == 0) return "0";  // also -0
  // The shortest digits that round-trip, d.ddde[+-]N; then ES6's layout of them.
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, std::fabs(x), std::chars_format::scientific);
  const std::string_view s(buf, static_cast<size_t>(r.ptr - buf));
  const size_t e = s.find('e');
  std::string digits(1, s[0]);
  if (e > 1) digits += s.substr(2, e - 2);
  int exp = 0;
  std::string_view es = s.substr(e + 1);
  const bool neg_exp = es.front() == '-';
  if (es.front() == '+' || es.front() == '-') es.remove_prefix(1);
  std::from_chars(es.data(), es.data() + es.size(), exp);
  if (neg_exp) exp = -exp;
  const int k = static_cast<int>(digits.size());
  const int n = exp + 1;  // x = 0.digits * 10^n
  std::string out = x < 0 ? "-" : "";
  if (k <= n && n <= 21) {
    out += digits + std::string(static_cast<size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, static_cast<size_t>(n)) + "." + digits.substr(static_cast<size_t>(n));
  } else if (-6 < n && n <= 0) {
    out += "0." + std::string(static_cast<size_t>(-n), '0') + digits;
  } else {
    out += digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += (n - 1 >= 0 ? "e+" : "e-") + std::to_string(std::abs(n - 1));
  }
  return out;
}

std::string canonical_json(const json& v) { return Jcs(true).text(v); }

std::string canonical_json_rfc8785(const json& v) { return Jcs(false).text(v); }

json measured_config(const json& config) {
  if (!config.is_object()) throw Error("config.json is not a JSON object");
  json out = json::object();
  if (const json* process = member(config, "process"); process && process->is_object()) {
    json p = json::object();
    for (const char* k : kProcessFields)
      if (const json* f = member(*process, k)) p[k] = *f;
    if (!p.empty()) out["process"] = std::move(p);
  }
  if (const json* readonly = member(config, "root", "readonly"))
    out["root"] = {{"readonly", *readonly}};
  if (const json* mounts = member(config, "mounts"))
    out["mounts"] = project_array(*mounts, project_mount);
  if (const json* linux = member(config, "linux"); linux && linux->is_object()) {
    json l = json::object();
    if (const json* ns = member(*linux, "namespaces"))
      l["namespaces"] = project_array(*ns, project_namespace);
    for (const char* k : kLinuxFields)
      if (const json* f = member(*linux, k)) l[k] = *f;
    // the device cgroup is rights; the rest of resources is quotas, changed in place
    if (const json* devices = member(*linux, "resources", "devices"))
      l["resources"] = {{"devices", *devices}};
    if (const json* seccomp = member(*linux, "seccomp")) {
      json s = *seccomp;
      if (s.is_object()) {  // the listener is a host socket
        s.erase("listenerPath");
        s.erase("listenerMetadata");
      }
      l["seccomp"] = std::move(s);
    }
    if (!l.empty()) out["linux"] = std::move(l);
  }
  return out;
}

std::string_view to_string(ImageSource s) {
  switch (s) {
    case ImageSource::Containerd:
      return "containerd";
    case ImageSource::CriO:
      return "cri-o";
    case ImageSource::None:
      break;
  }
  return "none";
}

std::vector<LaunchEvent> launch_events(const json& config, ImageSource src,
                                       std::span<const std::string> banks) {
  std::vector<LaunchEvent> events;
  events.push_back(make_event({{"event", "oci-config"},
                               {"form", std::string(kMeasuredConfigForm)},
                               {"config", measured_config(config)}}));
  json image = {{"event", "image"}, {"source", std::string(to_string(src))}};
  if (src != ImageSource::None) {
    // only the keys the named engine writes; the rest of annotations is the workload author's
    json annotations = json::object();
    for (const std::string_view k : image_keys(src))
      if (const json* a = member(config, "annotations", std::string(k).c_str()))
        annotations[std::string(k)] = *a;
    image["annotations"] = std::move(annotations);
  }
  events.push_back(make_event(std::move(image)));
  events.push_back(make_event({{"event", "separator"}}));
  add_bank_digests(events, banks);
  return events;
}

void add_bank_digests(std::vector<LaunchEvent>& events, std::span<const std::string> banks) {
  for (auto& e : events)
    for (const auto& b : banks)
      if (!e.digests.count(b)) e.digests[b] = bank_digest(b, e.canonical);
}

std::vector<std::string> all_bank_names() {
  std::vector<std::string> out;
  for (const auto& b : kPcrBanks) out.emplace_back(b.name);
  return out;
}

std::vector<uint8_t> bank_digest(std::string_view bank, std::string_view data) {
  return bank_hash(bank).digest(data);
}

std::string cel_log(const std::vector<LaunchEvent>& events, unsigned pcr,
                    const std::vector<std::string>& banks) {
  std::set<std::pair<uint16_t, std::string>> by_alg;
  for (const auto& b : banks) {
    const auto alg = pcr_bank_alg(b);
    if (!alg) throw Error("unknown PCR bank \"" + one_line(b) + "\"");
    by_alg.emplace(*alg, b);
  }
  nlohmann::ordered_json log = nlohmann::ordered_json::array();
  for (size_t i = 0; i < events.size(); ++i) {
    const LaunchEvent& e = events[i];
    auto digests = nlohmann::ordered_json::array();
    for (const auto& [alg, name] : by_alg) {
      const auto d = e.digests.find(name);
      if (d == e.digests.end())
        throw Error("measurement event " + std::to_string(i) + " has no " + name + " digest");
      digests.push_back({{"hashAlg", name}, {"digest", to_hex(d->second)}});
    }
    nlohmann::ordered_json record;
    record["recnum"] = i;
    record["pcr"] = pcr;
    record["digests"] = std::move(digests);
    record["content_type"] = std::string(kCelContentType);
    record["content"] = nlohmann::ordered_json::parse(e.content.dump());
    log.push_back(std::move(record));
  }
  return log.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::strict) + "\n";
}

std::map<std::string, std::vector<uint8_t>> replay_cel(std::string_view cel_text, unsigned pcr,
                                                       uint8_t start_byte) {
  const std::string what = "measurement log";
  json log;
  try {
    log = json::parse(cel_text);
  } catch (const json::exception& e) {
    throw Error(what + ": not JSON: " + e.what());
  }
  if (!log.is_array()) throw Error(what + ": not a JSON array of records");
  std::map<std::string, std::vector<uint8_t>> pcrs;
  std::set<std::string> first_banks;
  bool first = true;
  for (size_t i = 0; i < log.size(); ++i) {
    const json& r = log[i];
    const std::string rec = what + ": record " + std::to_string(i);
    if (!r.is_object()) throw Error(rec + " is not an object");
    const json* recnum = member(r, "recnum");
    const json* rpcr = member(r, "pcr");
    const json* type = member(r, "content_type");
    const json* content = member(r, "content");
    const json* digests = member(r, "digests");
    if (!recnum || !recnum->is_number_unsigned() || recnum->get<uint64_t>() != i)
      throw Error(rec + ": recnum is not " + std::to_string(i));
    if (!rpcr || !rpcr->is_number_unsigned()) throw Error(rec + ": pcr is not a PCR index");
    if (!type || *type != kCelContentType)
      throw Error(rec + ": content_type is not \"" + std::string(kCelContentType) + "\"");
    if (!content) throw Error(rec + " has no content");
    if (!digests || !digests->is_array() || digests->empty())
      throw Error(rec + ": digests is not a list of {hashAlg, digest}");
    if (rpcr->get<uint64_t>() != pcr) continue;
    const std::string canonical = with_context(rec, [&] { return canonical_json(*content); });
    std::set<std::string> banks;
    for (const json& d : *digests) {
      const json* alg = member(d, "hashAlg");
      const json* hex = member(d, "digest");
      if (!alg || !alg->is_string() || !hex || !hex->is_string())
        throw Error(rec + ": digests is not a list of {hashAlg, digest}");
      const auto& bank = alg->get_ref<const std::string&>();
      if (!pcr_bank_alg(bank)) throw Error(rec + ": unknown hashAlg \"" + one_line(bank) + "\"");
      if (!banks.insert(bank).second) throw Error(rec + " names " + bank + " twice");
      const auto digest = bank_digest(bank, canonical);
      if (hex->get_ref<const std::string&>() != to_hex(digest))
        throw Error(rec + ": its " + bank + " digest is not the digest of its content");
      auto [it, fresh] = pcrs.try_emplace(bank, digest.size(), start_byte);
      if (!first && fresh) throw Error(rec + " has a bank the records before it have not");
      // PCR_Extend: new = H(old || digest)
      std::string data(it->second.begin(), it->second.end());
      data.append(digest.begin(), digest.end());
      it->second = bank_digest(bank, data);
    }
    if (!first && banks != first_banks)
      throw Error(rec + " has other banks than the records before it");
    if (first) first_banks = banks;
    first = false;
  }
  return pcrs;
}

}  // namespace vtpm
