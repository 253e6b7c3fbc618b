#include "hook/host_inputs.h"

#include <grp.h>
#include <pwd.h>

#include <filesystem>

#include "common/error.h"
#include "oci/policy.h"

namespace vtpm {
namespace {

bool parse_id(const std::string& s, unsigned long& out) {
  if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string::npos)
    return false;
  out = std::stoul(s);
  return out < 0xffffffffUL;
}

// A key file names a secret of the host's: no link on its path, owned by root or by the user
// the TPM's emulator runs as (who could read it anyway), never by another.
SecretFileRules key_file_rules(const VtpmSpec& spec) {
  SecretFileRules r{true, {0}};
  if (spec.run_as) r.owners.push_back(resolve_user(*spec.run_as).uid);
  return r;
}

}  // namespace

Credentials resolve_user(const std::string& spec) {
  const auto colon = spec.find(':');
  const std::string user = spec.substr(0, colon);
  unsigned long uid = 0, gid = 0;
  Credentials c;
  if (parse_id(user, uid)) {
    c.uid = static_cast<uid_t>(uid);
    const passwd* pw = ::getpwuid(c.uid);
    c.gid = pw ? pw->pw_gid : c.uid;
  } else {
    const passwd* pw = ::getpwnam(user.c_str());
    if (!pw) throw Error("runAs: no such user \"" + user + "\"");
    c.uid = pw->pw_uid;
    c.gid = pw->pw_gid;
  }
  if (colon != std::string::npos) {
    const std::string name = spec.substr(colon + 1);
    if (parse_id(name, gid)) {
      c.gid = static_cast<gid_t>(gid);
    } else {
      const struct group* gr = ::getgrnam(name.c_str());
      if (!gr) throw Error("runAs: no such group \"" + name + "\"");
      c.gid = gr->gr_gid;
    }
  }
  return c;
}

RequestDefaults request_defaults(const HookOptions& opts) {
  RequestDefaults d{opts.state_root,
                    load_policy(opts.policy, opts.policy_required),
                    {},
                    opts.default_vtpm,
                    opts.run_root};
  for (const auto& f : {opts.ca_key, opts.ca_cert})
    d.reserved.push_back(normal_path(std::filesystem::path(f).parent_path(), "--ca-key/--ca-cert"));
  check_policy_roots(d.policy, {opts.state_root, opts.run_root, d.reserved},
                     "policy file " + opts.policy);
  return d;
}

void check_key_files(const VtpmSpec& spec) {
  if (!spec.key_file && !spec.password_file) return;
  const SecretFileRules rules = key_file_rules(spec);
  if (spec.key_file) open_secret_file(*spec.key_file, "state key file", kMaxKeyFileSize, rules);
  if (spec.password_file)
    open_secret_file(*spec.password_file, "password file", kMaxPasswordFileSize, rules);
}

std::optional<StateKey> load_state_key(const VtpmSpec& spec) {
  if (spec.key_file) return load_key_file(*spec.key_file, "binary", 256, key_file_rules(spec));
  if (spec.password_file)
    return derive_key_from_password_file(*spec.password_file, 256, "pbkdf2", key_file_rules(spec));
  return std::nullopt;
}

}  // namespace vtpm
