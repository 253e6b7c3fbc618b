#include "hook/runtime_wrapper.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/io_util.h"
#include "common/unique_fd.h"
#include "oci/vtpm_request.h"

namespace vtpm {
namespace {

using Json = nlohmann::ordered_json;  // keeps config.json's key order

constexpr size_t kMaxConfigSize = 64u << 20;

// "--name=value", "-name value", "--n": Go's flag package (runc) takes one or two dashes for any
// name; argp (crun) takes --long and -s. Returns {name, value-if-attached}.
std::pair<std::string, std::optional<std::string>> split_option(const std::string& a) {
  const size_t dashes = a.compare(0, 2, "--") == 0 ? 2 : 1;
  const auto eq = a.find('=');
  if (eq == std::string::npos) return {a.substr(dashes), std::nullopt};
  return {a.substr(dashes, eq - dashes), a.substr(eq + 1)};
}

bool one_of(const std::string& s, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (s == n) return true;
  return false;
}

// runc's and crun's global options, before the command.
const std::initializer_list<const char*> kGlobalWithValue = {
    "root", "log", "log-format", "log-level", "criu", "rootless", "cgroup-manager"};
const std::initializer_list<const char*> kGlobalFlags = {"debug", "systemd-cgroup", "help",
                                                         "h",     "version",        "v"};
// create's and run's options (runc 1.1/1.2, crun) after the command.
const std::initializer_list<const char*> kCreateWithValue = {
    "bundle", "b", "console-socket", "pid-file", "preserve-fds", "pidfd-socket"};
const std::initializer_list<const char*> kCreateFlags = {
    "detach", "d", "keep", "no-subreaper", "no-pivot", "no-new-keyring", "help", "h"};

std::string absolute(const std::string& p, const std::string& cwd) {
  if (p.empty()) return cwd;
  return p[0] == '/' ? p : cwd + "/" + p;
}

std::string self_exe() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw sys_error("readlink /proc/self/exe");
  std::string path(buf, static_cast<size_t>(n));
  // replaced while it ran (a package upgrade): the hooks run the new binary at the same path
  constexpr std::string_view kDeleted = " (deleted)";
  if (path.ends_with(kDeleted)) path.resize(path.size() - kDeleted.size());
  return path;
}

// true when `path` is the file /proc/self/exe is (the wrapper and the hook are one binary)
bool is_this_executable(const std::string& path) { return same_file(path, "/proc/self/exe"); }

// "runc" on PATH (the engine's), never the wrapper itself (e.g. a vtpm-runc named runc)
std::string find_runc() {
  const char* env = std::getenv("PATH");
  const std::string path =
      env && *env ? env : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  size_t start = 0;
  while (start <= path.size()) {
    const size_t end = std::min(path.find(':', start), path.size());
    const std::string dir = path.substr(start, end - start);
    start = end + 1;
    if (dir.empty() || dir[0] != '/') continue;  // never the working directory (the bundle's)
    const std::string cand = dir + "/runc";
    if (::access(cand.c_str(), X_OK) == 0 && !is_this_executable(cand)) return cand;
  }
  throw Error("no runc on PATH (" + path + "); name the real runtime with \"runtime\" in " +
              kDefaultPolicyPath);
}

// The value of NAME in process.env ("NAME=value"), the first one as getenv(3) would.
std::optional<std::string> process_env(const Json& doc, const std::string& name) {
  const auto p = doc.find("process");
  if (p == doc.end() || !p->is_object()) return std::nullopt;
  const auto env = p->find("env");
  if (env == p->end() || !env->is_array()) return std::nullopt;
  for (const auto& e : *env)
    if (e.is_string() &&
        e.get_ref<const std::string&>().compare(0, name.size() + 1, name + "=") == 0)
      return e.get<std::string>().substr(name.size() + 1);
  return std::nullopt;
}

bool has_self_hook(const Json& doc, const WrapperHooks& hooks) {
  const auto h = doc.find("hooks");
  if (h == doc.end()) return false;
  if (!h->is_object()) throw Error("config.json: \"hooks\" is not an object");
  for (const auto& [stage, list] : h->items()) {
    if (!list.is_array()) continue;
    for (const auto& hook : list) {
      if (!hook.is_object()) continue;
      const auto p = hook.find("path");
      if (p != hook.end() && p->is_string() && hooks.is_self(p->get<std::string>())) return true;
    }
  }
  return false;
}

void append_hook(Json& doc, const char* stage, const WrapperHooks& hooks, const char* command) {
  Json& list = doc["hooks"][stage];
  if (list.is_null()) list = Json::array();
  if (!list.is_array())
    throw Error(std::string("config.json: \"hooks.") + stage + "\" is not an array");
  Json args = Json::array({"vtpm-hook"});
  for (const auto& a : hooks.hook_args) args.push_back(a);
  args.push_back(command);
  list.push_back(Json{{"path", hooks.path}, {"args", std::move(args)}});
}

// The runtime's --log file gets the error too: containerd's shim reports the last error there.
void report_error(const RuntimeArgs& rt, const std::string& msg) {
  std::fprintf(stderr, "%s: error: %s\n", kWrapperName, msg.c_str());
  if (rt.log_file.empty()) return;
  UniqueFd fd(
      ::open(rt.log_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return;
  std::string line;
  if (rt.log_format == "json") {
    char when[64] = "";
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    if (::gmtime_r(&now, &tm)) std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    line = Json{{"level", "error"}, {"msg", std::string(kWrapperName) + ": " + msg}, {"time", when}}
               .dump() +
           "\n";
  } else {
    line = std::string(kWrapperName) + ": error: " + msg + "\n";
  }
  (void)!::write(fd.get(), line.data(), line.size());  // best effort: stderr has it
}

void edit_config(const std::string& bundle, const WrapperHooks& hooks) {
  const std::string path = bundle + "/config.json";
  struct stat st {};
  UniqueFd fd = open_regular_file(AT_FDCWD, path, path, st);
  if (!fd) throw sys_error("open " + path);
  const std::string text = read_all(fd.get(), kMaxConfigSize, path);
  fd.reset();
  const auto edited = add_hooks_to_config(text, hooks);
  if (!edited) return;
  write_file_atomic(path,
                    std::span(reinterpret_cast<const uint8_t*>(edited->data()), edited->size()));
  // the new file is 0600 like every atomic write; give it the old one's mode back
  if (::chmod(path.c_str(), st.st_mode & 07777) != 0) throw sys_error("chmod " + path);
}

}  // namespace

RuntimeArgs parse_runtime_args(const std::vector<std::string>& args, const std::string& cwd) {
  RuntimeArgs rt;
  bool info = false;  // --help/--version: the real runtime answers
  size_t i = 0;
  const auto value_of = [&](const std::string& a, const std::optional<std::string>& attached) {
    if (attached) return *attached;
    if (i + 1 >= args.size()) throw Error("option " + a + " needs a value");
    return args[++i];
  };
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;
    const auto [name, attached] = split_option(a);
    if (one_of(name, kGlobalWithValue)) {
      const std::string v = value_of(a, attached);
      if (name == "log") rt.log_file = v;
      if (name == "log-format") rt.log_format = v;
    } else if (one_of(name, kGlobalFlags)) {
      info |= one_of(name, {"help", "h", "version", "v"});
    } else {
      throw Error("unknown global option " + one_line(a) + " (before the command)");
    }
  }
  if (i >= args.size()) return rt;
  rt.command = args[i++];
  if (info || (rt.command != "create" && rt.command != "run")) return rt;
  // runc (urfave/cli) also takes options after the container id: read them all
  std::optional<std::string> bundle;
  bool help = false;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    if (a.size() < 2 || a[0] != '-') continue;  // the container id
    const auto [name, attached] = split_option(a);
    if (one_of(name, kCreateWithValue)) {
      const std::string v = value_of(a, attached);
      if (name == "bundle" || name == "b") bundle = v;
    } else if (one_of(name, kCreateFlags)) {
      help |= name == "help" || name == "h";
    } else {
      throw Error("unknown option " + one_line(a) + " of '" + rt.command +
                  "' (vtpm-runc must know it to find the bundle)");
    }
  }
  rt.bundle = absolute(bundle.value_or(""), cwd);
  rt.edits = !help;
  return rt;
}

std::optional<std::string> add_hooks_to_config(std::string_view config_text,
                                               const WrapperHooks& hooks) {
  Json doc;
  try {
    doc = Json::parse(config_text);
  } catch (const Json::exception& e) {
    throw Error(std::string("config.json is not JSON: ") + e.what());
  }
  if (!doc.is_object()) throw Error("config.json is not a JSON object");
  WrapperHooks h = hooks;
  if (!h.is_self) h.is_self = [&](const std::string& p) { return p == hooks.path; };
  if (has_self_hook(doc, h)) return std::nullopt;

  const auto ann = doc.find("annotations");
  if (ann != doc.end() && !ann->is_object())
    throw Error("config.json: \"annotations\" is not an object");
  const auto annotation = [&](const char* key) -> const Json* {
    if (ann == doc.end()) return nullptr;
    const auto it = ann->find(key);
    return it == ann->end() ? nullptr : &*it;
  };
  // Kubernetes pod sandboxes (the pause container) get no TPM. The CRI runtime sets these; a
  // workload that forges one only goes without a TPM itself.
  for (const char* key : {"io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"})
    if (const Json* t = annotation(key); t && *t == "sandbox") return std::nullopt;
  const Json* single = annotation(kAnnotationVtpm);
  if (single && single->is_string() && single->get<std::string>() == kNoVtpm) return std::nullopt;
  const auto linux_it = doc.find("linux");
  const bool has_vtpms =
      linux_it != doc.end() && linux_it->is_object() && linux_it->contains("vtpms");
  // The environment is a fallback for engines without annotations: what is written in
  // linux.vtpms or an io.vtpm-hook annotation decides (the hook checks those).
  if (const auto env = process_env(doc, kVtpmEnv);
      env && !has_vtpms && !single && !annotation(kAnnotationVtpms)) {
    if (*env == kNoVtpm) return std::nullopt;
    if (*env == "1.2")
      doc["annotations"][kAnnotationVtpm] = "1.2";
    else if (*env != "2")
      throw Error(std::string("process.env ") + kVtpmEnv + " must be 2, 1.2 or none, not \"" +
                  one_line(*env) + "\"");
  }
  append_hook(doc, "createRuntime", h, "setup");
  append_hook(doc, "poststop", h, "teardown");
  return doc.dump() + "\n";
}

int run_runtime_wrapper(int argc, char** argv) {
  RuntimeArgs rt;
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    char cwd[PATH_MAX];
    if (!::getcwd(cwd, sizeof cwd)) throw sys_error("getcwd");
    rt = parse_runtime_args(args, cwd);
    // the administrator's choices; a missing file gives runc and the hook's defaults
    const Policy policy = load_policy(kDefaultPolicyPath, false);
    const std::string real = policy.runtime.empty() ? find_runc() : policy.runtime;
    if (is_this_executable(real))
      throw Error("the real runtime " + real + " is " + kWrapperName + " itself");
    if (::access(real.c_str(), X_OK) != 0) throw sys_error("the real runtime " + real);
    if (rt.edits) {
      WrapperHooks hooks;
      hooks.path = self_exe();
      hooks.hook_args = policy.wrapper_hook_args;
      hooks.is_self = [&](const std::string& p) {
        return p == hooks.path || is_this_executable(p);
      };
      edit_config(rt.bundle, hooks);
    }
    // An exec, not a child: stdio, signals and the exit status are the real runtime's.
    std::vector<char*> out(argv, argv + argc + 1);
    const std::string name = real.substr(real.rfind('/') + 1);
    out[0] = const_cast<char*>(name.c_str());
    ::execv(real.c_str(), out.data());
    throw sys_error("exec " + real);
  } catch (const std::exception& e) {
    report_error(rt, one_line(e.what()));
    return 1;
  }
}

}  // namespace vtpm
