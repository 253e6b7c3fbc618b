#pragma once
// `vtpm-hook doctor`: what this host lacks for vTPMs, one finding per line, each with its fix.
// It reads and opens, and never creates or changes anything.
#include <string>
#include <vector>

#include "hook/hooks.h"

namespace vtpm {

// $PATH, then the usual system directories (dockerd is in /usr/sbin on Debian).
std::string default_search_path();

// Where the doctor looks; the defaults are the real host's (tests point them at scratch dirs).
// Lists of directories are in precedence order: the first holding a file name is the one used.
struct DoctorPaths {
  std::string self_exe = "/proc/self/exe";   // "this executable", that hooks must run
  std::string sys_module = "/sys/module";    // <module>/ while it is loaded
  std::string lib_modules = "/lib/modules";  // <release>/modules.builtin, modules.dep
  std::string kernel_release;                // empty: uname -r
  std::vector<std::string> modules_load_dirs = {"/etc/modules-load.d", "/run/modules-load.d",
                                                "/usr/local/lib/modules-load.d",
                                                "/usr/lib/modules-load.d", "/lib/modules-load.d"};
  std::string etc_modules = "/etc/modules";  // Debian's kmod list, loaded at boot too
  // podman and CRI-O: a file in /etc overrides the one of the same name in /usr/share
  std::vector<std::string> hooks_dirs = {"/etc/containers/oci/hooks.d",
                                         "/usr/share/containers/oci/hooks.d"};
  std::vector<std::string> cdi_dirs = {"/etc/cdi", "/var/run/cdi"};
  // where dockerd and containerd are looked for, and a runtime path without a slash
  std::string search_path = default_search_path();
  std::string docker_config = "/etc/docker/daemon.json";
  std::string containerd_config = "/etc/containerd/config.toml";
  std::string mounts = "/proc/self/mounts";  // for the cgroup version
  std::vector<std::string> udev_rules_dirs = {"/etc/udev/rules.d", "/run/udev/rules.d",
                                              "/usr/lib/udev/rules.d", "/lib/udev/rules.d"};
};

// ok: present and right. info: a fact (the cgroup version). warn: vTPMs work, but one way in
// (an engine, the annotation path, CDI) or one safeguard is not set up. fail: vTPMs cannot be
// given safely, or at all, until it is fixed.
enum class DoctorLevel { Ok, Info, Warn, Fail };

struct DoctorFinding {
  DoctorLevel level;
  std::string what;
  std::string fix;  // a command or the exact lines to add; empty for ok and info
};

struct DoctorReport {
  std::vector<DoctorFinding> findings;
  bool blocking = false;  // a fail
  bool warned = false;    // a warn
};

// Every check, in a fixed order; a check that cannot run becomes its own finding (never throws
// for the host's state). opts: the global options (vtpmx, policy, roots, emulator user, CA).
DoctorReport run_doctor(const HookOptions& opts, const DoctorPaths& paths = {});

// "<level>: <what>" and, when there is one, " (fix: <fix>)"; one line, no newline.
std::string render_finding(const DoctorFinding& f);

// 0: nothing to fix; 1: something blocks vTPMs (a fail); 2: only warnings.
int doctor_exit_code(const DoctorReport& r);

}  // namespace vtpm
