#include "hook/doctor.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "common/error.h"
#include "common/io_util.h"
#include "hook/cdi.h"
#include "hook/host_inputs.h"
#include "hook/runtime_wrapper.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kModule = "tpm_vtpm_proxy";
constexpr const char* kHooksFile = "vtpm-hook.json";     // the oci-hooks file's name
constexpr const char* kUdevRule = "70-vtpm-hook.rules";  // udev/70-vtpm-hook.rules
constexpr size_t kMaxConfigSize = 4u << 20;

struct Doctor {
  const HookOptions& opts;
  const DoctorPaths& paths;
  std::string self;  // this executable's real path, for the fixes
  DoctorReport report;

  void add(DoctorLevel level, std::string what, std::string fix = {}) {
    report.blocking |= level == DoctorLevel::Fail;
    report.warned |= level == DoctorLevel::Warn;
    report.findings.push_back({level, std::move(what), std::move(fix)});
  }
  void ok(std::string what) { add(DoctorLevel::Ok, std::move(what)); }
  void info(std::string what) { add(DoctorLevel::Info, std::move(what)); }
  void warn(std::string what, std::string fix) {
    add(DoctorLevel::Warn, std::move(what), std::move(fix));
  }
  void fail(std::string what, std::string fix) {
    add(DoctorLevel::Fail, std::move(what), std::move(fix));
  }

  // true when `path` (a link is followed) is this executable's file
  bool is_self(const std::string& path) const { return same_file(path, paths.self_exe); }
  std::string runc_path() const { return (fs::path(self).parent_path() / kWrapperName).string(); }

  void module();
  void vtpmx();
  void policy();
  void emulator_user();
  void root_dir(const std::string& path, const std::string& label);
  void hooks_file();
  void cdi_spec();
  void wrapper();
  void docker();
  void containerd();
  void cgroup();
  void udev_rule();
};

// The whole file (links followed, as the engines read it); nullopt when it does not exist.
// Throws Error when it is something else than a readable regular file.
std::optional<std::string> read_text(const std::string& path) {
  // the type first: opening a device node (through a link) can have effects of its own
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw sys_error("stat " + path);
  }
  if (!S_ISREG(st.st_mode)) throw Error(path + " is not a regular file");
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw sys_error("cannot open " + path);
  }
  if (::fstat(fd.get(), &st) != 0) throw sys_error("stat " + path);
  if (!S_ISREG(st.st_mode)) throw Error(path + " is not a regular file");
  return read_all(fd.get(), kMaxConfigSize, path);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const auto b = line.find_first_not_of(" \t"), e = line.find_last_not_of(" \t\r");
    out.push_back(b == std::string::npos ? "" : line.substr(b, e - b + 1));
  }
  return out;
}

// "a", "b" and "c" as `a, b or c`
std::string either(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i)
    s += (i == 0 ? "" : i + 1 == v.size() ? " or " : ", ") + v[i];
  return s;
}

std::string realpath_of(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::canonical(path, ec);
  if (!ec) return p.string();
  // /proc/self/exe of a binary replaced while it ran (an upgrade): the path it had
  std::string s = fs::read_symlink(path, ec).string();
  constexpr std::string_view kDeleted = " (deleted)";
  if (s.ends_with(kDeleted)) s.resize(s.size() - kDeleted.size());
  return ec ? path : s;
}

// A program as a shell (or dockerd) finds it: a path with a slash as it is, else on `search`.
std::optional<std::string> find_program(const std::string& name, const std::string& search) {
  if (name.find('/') != std::string::npos) return name;
  std::istringstream in(search);
  for (std::string dir; std::getline(in, dir, ':');) {
    if (dir.empty()) continue;
    const std::string p = dir + "/" + name;
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0)
      return p;
  }
  return std::nullopt;
}

void Doctor::module() {
  std::string release = paths.kernel_release;
  if (release.empty()) {
    struct utsname u {};
    if (::uname(&u) == 0) release = u.release;
  }
  const std::string dir = paths.lib_modules + "/" + release;
  const std::string ko = std::string("/") + kModule + ".ko";  // also .ko.xz, .ko.zst
  const auto builtin = read_text(dir + "/modules.builtin");
  if (builtin && builtin->find(ko) != std::string::npos)
    return ok(std::string("kernel module ") + kModule + " is built into the kernel");

  bool at_boot = false;
  auto scan = [&](const std::string& file) {
    if (const auto text = read_text(file))
      for (const auto& l : lines_of(*text)) at_boot |= l == kModule;
  };
  for (const auto& d : paths.modules_load_dirs) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(d, ec))
      if (e.path().extension() == ".conf") scan(e.path());
  }
  scan(paths.etc_modules);
  const std::string boot_fix =
      std::string("echo ") + kModule + " > /etc/modules-load.d/vtpm-hook.conf";

  struct stat st {};
  if (::stat((paths.sys_module + "/" + kModule).c_str(), &st) == 0) {
    if (at_boot) return ok(std::string("kernel module ") + kModule + " is loaded, and at boot");
    return warn(std::string("kernel module ") + kModule + " is loaded, but not at boot", boot_fix);
  }
  const auto dep = read_text(dir + "/modules.dep");
  if (dep && dep->find(ko) == std::string::npos)
    return fail("kernel " + release + " has no module " + kModule,
                "a kernel built with CONFIG_TCG_VTPM_PROXY (Debian's has it)");
  fail(std::string("kernel module ") + kModule + " is not loaded",
       std::string("modprobe ") + kModule + (at_boot ? "" : "; " + boot_fix));
}

void Doctor::vtpmx() {
  const std::string& p = opts.vtpmx;
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) {
    if (errno == ENOENT) return fail(p + " is missing", std::string("modprobe ") + kModule);
    return fail(sys_error("stat " + p).what(), "check " + p);
  }
  if (!S_ISCHR(st.st_mode))
    return fail(p + " is not a character device",
                "remove it, then modprobe -r " + std::string(kModule) + "; modprobe " + kModule);
  // Opening creates nothing (only VTPM_PROXY_IOC_NEW_DEV does).
  UniqueFd fd(::open(p.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd)
    return fail(sys_error("cannot open " + p).what(),
                ::geteuid() != 0 ? "run vtpm-hook doctor as root" : "check " + p);
  ok(p + " is a character device root can open");
}

void Doctor::policy() {
  const std::string fix = "correct " + opts.policy + " (docs/configuration.md, \"Policy file\")";
  try {
    // what setup and `cdi` refuse: a bad file, roots overlapping the hook's, bad cdiDevices
    const RequestDefaults d = request_defaults(opts);
    cdi_devices(d.policy);
  } catch (const std::exception& e) {
    return fail(e.what(), fix);
  }
  struct stat st {};
  if (::stat(opts.policy.c_str(), &st) != 0)
    return ok("no policy file " + opts.policy + ": the built-in defaults");
  ok("policy file " + opts.policy + " is valid");
}

void Doctor::emulator_user() {
  const std::string& spec = opts.emulator_user;
  const std::string what = "emulator user (--emulator-user) " + spec;
  const std::string name = spec.substr(0, spec.find(':'));
  const std::string fix = "adduser --system --group --no-create-home --home /nonexistent " + name;
  Credentials c;
  try {
    c = resolve_user(spec);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (msg.starts_with("runAs: ")) msg.erase(0, 7);
    return fail(what + ": " + msg, fix);
  }
  if (c.uid == 0 || c.gid == 0)
    return fail(what + " is root (uid " + std::to_string(c.uid) + ", gid " + std::to_string(c.gid) +
                    "): emulators never run as root",
                "--emulator-user vtpm-hook, after " +
                    std::string("adduser --system --group --no-create-home --home /nonexistent "
                                "vtpm-hook"));
  ok(what + " exists (uid " + std::to_string(c.uid) + ", gid " + std::to_string(c.gid) + ")");
}

// Root's directory, written by nobody else: whoever else can write it can swap the TPM state
// or run records of others.
void Doctor::root_dir(const std::string& path, const std::string& label) {
  const std::string what = label + " " + path;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return fail(what + " is not a directory", "move it away");
    if (st.st_uid != 0)
      return fail(what + " belongs to uid " + std::to_string(st.st_uid) + ", not root",
                  "chown root:root " + path);
    if (st.st_mode & (S_IWGRP | S_IWOTH))
      return fail(what + " is writable by group or others", "chmod go-w " + path);
    return ok(what + " is root's, not writable by others");
  }
  if (errno != ENOENT) return fail(sys_error("stat " + path).what(), "check " + path);
  // missing: setup makes it in the nearest directory that exists
  fs::path up = fs::absolute(path);
  while (up.has_parent_path() && up != up.parent_path() && ::stat(up.c_str(), &st) != 0)
    up = up.parent_path();
  const std::string mk = "mkdir -p -m 0755 " + path;
  if (::stat(up.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return fail(what + " cannot be created: " + up.string() + " is not a directory",
                "check " + path);
  if (::access(up.c_str(), W_OK) != 0)
    return fail(sys_error(what + " cannot be created in " + up.string()).what(), mk);
  if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)))
    return fail(what + " does not exist, and " + up.string() +
                    " is writable by others than root (who could make it first)",
                mk);
  ok(what + " does not exist yet; setup creates it in " + up.string());
}

void Doctor::hooks_file() {
  const std::string fix = "reinstall the vtpm-hook package, which ships " +
                          paths.hooks_dirs.back() + "/" + kHooksFile +
                          ", or cmake --install build --prefix /usr";
  for (const auto& dir : paths.hooks_dirs) {
    const std::string file = dir + "/" + kHooksFile;
    std::string path;
    try {
      const auto text = read_text(file);
      if (!text) continue;
      const json j = json::parse(*text);
      path = j.at("hook").at("path").get<std::string>();
    } catch (const std::exception& e) {
      return warn("oci-hooks file " + file + " is unusable: " + e.what(), fix);
    }
    if (!is_self(path))
      return warn(
          "oci-hooks file " + file + " runs " + path + ", not this executable (" + self + ")",
          "set \"path\": \"" + self + "\" in it");
    return ok("oci-hooks file " + file + " runs this executable (podman, CRI-O)");
  }
  warn("no oci-hooks file " + std::string(kHooksFile) + " in " + either(paths.hooks_dirs) +
           ": podman and CRI-O give no TPM by annotation",
       fix);
}

void Doctor::cdi_spec() {
  const std::string out = paths.cdi_dirs.back() + "/vtpm-hook.json";
  const std::string fix =
      self + " cdi --output " + out + "; at boot the package's vtpm-hook-cdi.service does it";
  bool found = false;
  for (const auto& dir : paths.cdi_dirs) {
    std::error_code ec;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().extension() == ".json") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      const std::string file = f.string(), what = "CDI spec " + file;
      const std::string redo = self + " cdi --output " + file;
      json spec;
      try {
        const auto text = read_text(file);
        if (!text) continue;
        spec = json::parse(*text);
      } catch (const std::exception& e) {
        // another vendor's spec is none of ours; a broken one of our name is
        if (f.filename() == "vtpm-hook.json") {
          found = true;
          warn(what + " is unusable: " + e.what(), redo);
        }
        continue;
      }
      if (!spec.is_object() || spec.value("kind", json()) != kCdiKind) continue;
      found = true;
      try {
        validate_cdi_spec(spec);
      } catch (const std::exception& e) {
        warn(what + " is invalid: " + e.what(), redo);
        continue;
      }
      std::vector<std::string> others;
      auto hooks_of = [&](const json& edits) {
        for (const auto& h : edits.value("hooks", json::array()))
          if (const auto p = h.at("path").get<std::string>();
              !is_self(p) && std::find(others.begin(), others.end(), p) == others.end())
            others.push_back(p);
      };
      if (spec.contains("containerEdits")) hooks_of(spec["containerEdits"]);
      for (const auto& d : spec["devices"]) hooks_of(d["containerEdits"]);
      if (!others.empty()) {
        warn(what + " runs " + either(others) + ", not this executable (" + self + ")", redo);
        continue;
      }
      ok(what + " (" + kCdiKind + ") runs this executable");
    }
  }
  if (!found)
    warn("no CDI spec of kind " + std::string(kCdiKind) + " in " + either(paths.cdi_dirs) +
             ": --device " + kCdiKind + "=2 fails",
         fix);
}

// vtpm-runc beside this executable: what Docker's and containerd's entries name.
void Doctor::wrapper() {
  const std::string runc = runc_path();
  if (is_self(runc)) return ok(runc + " is this executable (the runtime wrapper)");
  warn(runc + " is not this executable: Docker and containerd cannot reach the hook",
       "ln -sf " + fs::path(self).filename().string() + " " + runc);
}

void Doctor::docker() {
  const auto dockerd = find_program("dockerd", paths.search_path);
  if (!dockerd) return info("Docker (dockerd) is not installed: not checked");
  const std::string& cfg = paths.docker_config;
  const std::string entry = "\"runtimes\": {\"vtpm\": {\"path\": \"" + runc_path() + "\"}}";
  const std::string restart = ", then restart dockerd";
  json j;
  try {
    const auto text = read_text(cfg);
    if (!text)
      return warn("Docker: no " + cfg + ", so no runtime runs " + kWrapperName,
                  "echo '{" + entry + "}' > " + cfg + restart);
    j = json::parse(*text);
  } catch (const std::exception& e) {
    return warn("Docker: " + cfg + " is unusable: " + e.what(), "correct " + cfg);
  }
  const json runtimes = j.is_object() ? j.value("runtimes", json::object()) : json::object();
  if (runtimes.is_object())
    for (const auto& [name, rt] : runtimes.items()) {
      if (!rt.is_object() || !rt.contains("path") || !rt["path"].is_string()) continue;
      const std::string p = rt["path"];
      const auto found = find_program(p, paths.search_path);
      if (fs::path(p).filename() == kWrapperName && found && is_self(*found))
        return ok("Docker: runtime \"" + name + "\" in " + cfg + " runs " + p);
    }
  warn("Docker: no runtime in " + cfg + " runs " + runc_path(),
       "add " + entry + " to the object in " + cfg + restart);
}

void Doctor::containerd() {
  const auto bin = find_program("containerd", paths.search_path);
  if (!bin) return info("containerd is not installed: not checked");
  const std::string& cfg = paths.containerd_config;
  const std::string runc = runc_path();
  const std::string runtimes = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.";
  const std::string table = runtimes + "vtpm]";
  const std::string restart = ", then restart containerd";
  std::optional<std::string> text;
  try {
    text = read_text(cfg);
  } catch (const std::exception& e) {
    return warn("containerd: " + std::string(e.what()), "check " + cfg);
  }
  // A config that declares runtimes replaces containerd's built-in table: without a runc
  // entry (the default runtime) containerd 1.6 starts without its CRI plugin.
  const std::string runc_table =
      text && text->find(runtimes + "runc]") != std::string::npos
          ? ""
          : "'" + runtimes + "runc]' '  runtime_type = \"io.containerd.runc.v2\"' ";
  const std::string lines =
      runc_table + "'" + table + "' '  runtime_type = \"io.containerd.runc.v2\"' '" +
      table.substr(0, table.size() - 1) + ".options]' '  BinaryName = \"" + runc + "\"'";
  if (!text)
    return warn("containerd: no " + cfg + ", so no runtime runs " + kWrapperName,
                "printf '%s\\n' 'version = 2' " + lines + " > " + cfg + restart);
  // a plain text search: BinaryName = "..." on a line that is not a comment
  bool version2 = false;
  for (const auto& l : lines_of(*text)) {
    if (l.empty() || l[0] == '#') continue;
    auto value_of = [&](const std::string& key) -> std::optional<std::string> {
      if (!l.starts_with(key)) return std::nullopt;
      const auto eq = l.find_first_not_of(" \t", key.size());
      if (eq == std::string::npos || l[eq] != '=') return std::nullopt;
      std::string v = l.substr(eq + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      if (v.size() >= 2 && (v[0] == '"' || v[0] == '\'')) v = v.substr(1, v.find(v[0], 1) - 1);
      return v;
    };
    if (const auto v = value_of("version")) version2 |= *v == "2";
    const auto name = value_of("BinaryName");
    if (!name || fs::path(*name).filename() != kWrapperName) continue;
    const auto found = find_program(*name, paths.search_path);
    if (found && is_self(*found))
      return ok("containerd: " + cfg + " has a runtime with BinaryName " + *name);
  }
  const std::string what = "containerd: no runtime in " + cfg + " has BinaryName " + runc;
  // appending a table that is there already would stop containerd from starting
  if (text->find(table) != std::string::npos)
    return warn(what, "set BinaryName = \"" + runc + "\" in its " +
                          table.substr(0, table.size() - 1) + ".options] table" + restart);
  warn(what, "printf '%s\\n' " + lines + " >> " + cfg + restart +
                 (version2 ? "" : " (the file must say version = 2 before its tables)"));
}

void Doctor::cgroup() {
  std::optional<std::string> text;
  try {
    text = read_text(paths.mounts);
  } catch (const std::exception&) {
  }
  std::string v2_at;
  bool v1 = false, v1_devices = false;
  for (const auto& l : lines_of(text.value_or(""))) {
    std::istringstream in(l);
    std::string dev, at, type, options;
    if (!(in >> dev >> at >> type >> options)) continue;
    if (type == "cgroup2") v2_at = at;
    if (type == "cgroup") {
      v1 = true;
      std::istringstream o(options);
      for (std::string x; std::getline(o, x, ',');) v1_devices |= x == "devices";
    }
  }
  if (!v1 && v2_at.empty())
    return warn("no cgroup file system is mounted (" + paths.mounts +
                    "): setup cannot let a container open its TPM",
                "mount -t cgroup2 cgroup2 /sys/fs/cgroup");
  if (!v1)
    return info("cgroup v2 (unified" + (v2_at == "/sys/fs/cgroup" ? "" : ", at " + v2_at) +
                "): setup attaches a device program to the container's cgroup");
  const std::string kind = v2_at.empty() ? "cgroup v1" : "cgroup hybrid (v1, v2 at " + v2_at + ")";
  if (!v1_devices)
    return warn(kind +
                    " without the devices controller: setup cannot let a container open its "
                    "TPM",
                "mount the devices controller, e.g. mount -t cgroup -o devices devices "
                "/sys/fs/cgroup/devices");
  info(kind + ": setup writes the container's devices.allow");
}

void Doctor::udev_rule() {
  const std::string fix = "install udev/70-vtpm-hook.rules as " + paths.udev_rules_dirs.back() +
                          "/" + kUdevRule + " (the package does), then udevadm control --reload";
  for (const auto& dir : paths.udev_rules_dirs) {
    const std::string file = dir + "/" + kUdevRule;
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0 && errno == ENOENT) continue;
    // udev uses the first of the name: a link to /dev/null (or an empty file) masks the rule
    std::optional<std::string> text;
    try {
      text = read_text(file);
    } catch (const std::exception& e) {
      return warn("udev rule " + file + " is unusable: " + e.what(), fix);
    }
    std::string rules;  // its rules: a commented-out line keeps nothing
    for (const auto& l : lines_of(text.value_or("")))
      if (const auto c = l.find_first_not_of(" \t"); c != std::string::npos && l[c] != '#')
        rules += l + "\n";
    if (rules.find("/devices/virtual/tpm/") == std::string::npos ||
        rules.find("MODE=\"0600\"") == std::string::npos)
      return warn("udev rule " + file + " does not keep vTPM proxy chips root:root 0600", fix);
    return ok("udev rule " + file + " keeps vTPM proxy chips root:root 0600");
  }
  warn("no udev rule " + std::string(kUdevRule) + " in " + either(paths.udev_rules_dirs) +
           ": a later udev event may give a vTPM's host node to group tss",
       fix);
}

}  // namespace

std::string default_search_path() {
  const char* env = std::getenv("PATH");
  std::string p = env && *env ? std::string(env) + ":" : "";
  return p + "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

DoctorReport run_doctor(const HookOptions& opts, const DoctorPaths& paths) {
  Doctor d{opts, paths, realpath_of(paths.self_exe), {}};
  if (::geteuid() != 0) d.info("not running as root: some checks may fail for that alone");
  const bool engines =
      find_program("dockerd", paths.search_path) || find_program("containerd", paths.search_path);
  // A check that cannot run (an unreadable file, say) is a finding of its own, at the level of
  // what it checks; the others still run.
  auto run = [&](DoctorLevel level, const std::string& what, auto&& check) {
    try {
      check();
    } catch (const std::exception& e) {
      d.add(level, what + ": " + e.what(), "correct it");
    }
  };
  constexpr auto kFail = DoctorLevel::Fail, kWarn = DoctorLevel::Warn;
  run(kFail, "kernel module", [&] { d.module(); });
  run(kFail, opts.vtpmx, [&] { d.vtpmx(); });
  run(kFail, "policy", [&] { d.policy(); });
  run(kFail, "emulator user", [&] { d.emulator_user(); });
  run(kFail, "state root", [&] { d.root_dir(opts.state_root, "state root (--state-root)"); });
  run(kFail, "run root", [&] { d.root_dir(opts.run_root, "run root (--run-root)"); });
  run(kWarn, "oci-hooks file", [&] { d.hooks_file(); });
  run(kWarn, "CDI spec", [&] { d.cdi_spec(); });
  if (engines) run(kWarn, "runtime wrapper", [&] { d.wrapper(); });
  run(kWarn, "Docker", [&] { d.docker(); });
  run(kWarn, "containerd", [&] { d.containerd(); });
  run(kWarn, "cgroup", [&] { d.cgroup(); });
  run(kWarn, "udev rule", [&] { d.udev_rule(); });
  return std::move(d.report);
}

std::string render_finding(const DoctorFinding& f) {
  static constexpr const char* kNames[] = {"ok", "info", "warn", "fail"};
  std::string s = std::string(kNames[static_cast<int>(f.level)]) + ": " + f.what;
  if (!f.fix.empty()) s += " (fix: " + f.fix + ")";
  return one_line(s);
}

int doctor_exit_code(const DoctorReport& r) { return r.blocking ? 1 : r.warned ? 2 : 0; }

}  // namespace vtpm
