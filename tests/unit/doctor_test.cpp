// `vtpm-hook doctor` on a host made of scratch directories: every check is ok on a host set up
// as the docs say (exit 0); each one broken gives its warn or fail line with the fix, and the
// exit code says whether vTPMs are blocked (1) or only a way in is missing (2).
#include "hook/doctor.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "error_matchers.h"
#include "hook/cdi.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;

void write(const fs::path& p, const std::string& text, mode_t mode = 0644) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
  ASSERT_EQ(::chmod(p.c_str(), mode), 0) << p;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class DoctorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // the scratch host's policy and roots must be root's, as doctor (like setup) demands
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (files owned by root)";
    base_ = vtpm::testing::test_dir("doctor");
    fs::remove_all(base_);
    fs::create_directories(base_);
    ASSERT_EQ(::chmod(base_.c_str(), 0755), 0);
    // this executable, and vtpm-runc beside it as cmake --install and the package make it
    self_ = base_ / "usr/bin/vtpm-hook";
    write(self_, "#!/bin/sh\n", 0755);
    fs::create_symlink("vtpm-hook", base_ / "usr/bin/vtpm-runc");
    p_.self_exe = self_;

    p_.sys_module = base_ / "sys/module";
    fs::create_directories(base_ / "sys/module/tpm_vtpm_proxy");
    p_.lib_modules = base_ / "lib/modules";
    p_.kernel_release = "6.1.0-test";
    write(base_ / "lib/modules/6.1.0-test/modules.dep",
          "kernel/drivers/char/tpm/tpm_vtpm_proxy.ko:\nkernel/fs/fuse/fuse.ko:\n");
    write(base_ / "lib/modules/6.1.0-test/modules.builtin", "kernel/fs/ext4/ext4.ko\n");
    p_.modules_load_dirs = {base_ / "etc/modules-load.d", base_ / "usr/lib/modules-load.d"};
    write(base_ / "etc/modules-load.d/vtpm-hook.conf", "# vTPMs\ntpm_vtpm_proxy\n");
    p_.etc_modules = base_ / "etc/modules";

    opts_.vtpmx = "/dev/null";                           // a character device root can open
    opts_.policy = base_ / "etc/vtpm-hook/policy.json";  // missing: the defaults
    opts_.emulator_user = "65534:65534";
    opts_.state_root = base_ / "var/lib/vtpm-hook";  // missing, can be created
    opts_.run_root = base_ / "run/vtpm-hook";
    fs::create_directories(base_ / "run/vtpm-hook");
    opts_.ca_key = opts_.state_root + "/ca/ek-ca-key.pem";
    opts_.ca_cert = opts_.state_root + "/ca/ek-ca-cert.pem";

    p_.hooks_dirs = {base_ / "etc/hooks.d", base_ / "usr/share/hooks.d"};
    std::string hooks = slurp(fs::path(VTPM_SOURCE_DIR) / "examples/hooks.d/vtpm-hook.json.in");
    hooks.replace(hooks.find("@VTPM_HOOK_PATH@"), 16, self_.string());
    write(base_ / "usr/share/hooks.d/vtpm-hook.json", hooks);

    p_.cdi_dirs = {base_ / "etc/cdi", base_ / "run/cdi"};
    write_cdi(base_ / "run/cdi/vtpm-hook.json", self_);
    // another vendor's spec, and a file that is not JSON: neither is ours
    write(base_ / "etc/cdi/other.json",
          R"({"cdiVersion": "0.5.0", "kind": "example.com/gpu", "devices": []})");
    write(base_ / "etc/cdi/other.yaml.json", "cdiVersion: 0.5.0\n");

    p_.search_path = (base_ / "engines").string();
    write(base_ / "engines/dockerd", "#!/bin/sh\n", 0755);
    write(base_ / "engines/containerd", "#!/bin/sh\n", 0755);
    p_.docker_config = base_ / "etc/docker/daemon.json";
    write(p_.docker_config, R"({"runtimes": {"vtpm": {"path": ")" + runc() + R"("}}})");
    p_.containerd_config = base_ / "etc/containerd/config.toml";
    write(p_.containerd_config, containerd_toml(runc()));

    p_.mounts = base_ / "mounts";
    write(p_.mounts,
          "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev 0 0\n");
    p_.udev_rules_dirs = {base_ / "etc/udev/rules.d", base_ / "lib/udev/rules.d"};
    write(base_ / "lib/udev/rules.d/70-vtpm-hook.rules",
          slurp(fs::path(VTPM_SOURCE_DIR) / "udev/70-vtpm-hook.rules"));
  }
  void TearDown() override { fs::remove_all(base_); }

  std::string runc() const { return (base_ / "usr/bin/vtpm-runc").string(); }

  static std::string containerd_toml(const std::string& binary) {
    return "version = 2\n"
           "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vtpm]\n"
           "  runtime_type = \"io.containerd.runc.v2\"\n"
           "  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vtpm.options]\n"
           "    BinaryName = \"" +
           binary + "\"\n";
  }

  void write_cdi(const fs::path& file, const fs::path& hook) {
    CdiOptions o;
    o.hook_path = hook;
    o.devices = cdi_devices(Policy{});
    write(file, make_cdi_spec(o).dump(2));
  }

  // The report's lines, and the one line that starts with `level: ` and contains `text`.
  DoctorReport run() {
    report_ = run_doctor(opts_, p_);
    lines_.clear();
    for (const auto& f : report_.findings) lines_ += render_finding(f) + "\n";
    return report_;
  }
  std::string line(const std::string& level, const std::string& text) const {
    std::istringstream in(lines_);
    for (std::string l; std::getline(in, l);)
      if (l.starts_with(level + ": ") && l.find(text) != std::string::npos) return l;
    ADD_FAILURE() << "no \"" << level << ": ..." << text << "...\" line in\n" << lines_;
    return "";
  }
  int exit_code() const { return doctor_exit_code(report_); }

  fs::path base_, self_;
  DoctorPaths p_;
  HookOptions opts_;
  DoctorReport report_;
  std::string lines_;
};

TEST_F(DoctorTest, HostSetUpAsDocumentedIsAllOk) {
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;
  EXPECT_FALSE(report_.blocking);
  EXPECT_FALSE(report_.warned);
  line("ok", "kernel module tpm_vtpm_proxy is loaded, and at boot");
  line("ok", "/dev/null is a character device root can open");
  line("ok", "no policy file " + opts_.policy + ": the built-in defaults");
  line("ok", "emulator user (--emulator-user) 65534:65534 exists (uid 65534, gid 65534)");
  line("ok", "state root (--state-root) " + opts_.state_root + " does not exist yet");
  line("ok", "run root (--run-root) " + opts_.run_root + " is root's");
  line("ok", "oci-hooks file " + (base_ / "usr/share/hooks.d/vtpm-hook.json").string() +
                 " runs this executable");
  line("ok", "CDI spec " + (base_ / "run/cdi/vtpm-hook.json").string() +
                 " (vtpm-hook.io/tpm) runs this executable");
  line("ok", runc() + " is this executable");
  line("ok", "Docker: runtime \"vtpm\"");
  line("ok", "containerd: " + p_.containerd_config + " has a runtime with BinaryName " + runc());
  line("info", "cgroup v2 (unified)");
  line("ok", "udev rule " + (base_ / "lib/udev/rules.d/70-vtpm-hook.rules").string());
  // one finding per line, every one of them ok or info
  for (const auto& f : report_.findings) {
    EXPECT_TRUE(f.level == DoctorLevel::Ok || f.level == DoctorLevel::Info) << f.what;
    EXPECT_EQ(f.what.find('\n'), std::string::npos);
  }
}

TEST_F(DoctorTest, RenderedLineFormat) {
  EXPECT_EQ(render_finding({DoctorLevel::Ok, "a", ""}), "ok: a");
  EXPECT_EQ(render_finding({DoctorLevel::Info, "b", ""}), "info: b");
  EXPECT_EQ(render_finding({DoctorLevel::Warn, "c", "do d"}), "warn: c (fix: do d)");
  EXPECT_EQ(render_finding({DoctorLevel::Fail, "e\nf", "g"}), "fail: e\\x0af (fix: g)");
}

TEST_F(DoctorTest, ModuleNotLoadedBlocksAndNamesModprobe) {
  fs::remove(base_ / "sys/module/tpm_vtpm_proxy");
  run();
  EXPECT_EQ(exit_code(), 1);
  EXPECT_EQ(line("fail", "tpm_vtpm_proxy"),
            "fail: kernel module tpm_vtpm_proxy is not loaded (fix: modprobe tpm_vtpm_proxy)");
  // not at boot either: the fix says how
  fs::remove(base_ / "etc/modules-load.d/vtpm-hook.conf");
  run();
  EXPECT_EQ(line("fail", "tpm_vtpm_proxy"),
            "fail: kernel module tpm_vtpm_proxy is not loaded (fix: modprobe tpm_vtpm_proxy; "
            "echo tpm_vtpm_proxy > /etc/modules-load.d/vtpm-hook.conf)");
  // Debian's /etc/modules counts as at boot
  write(base_ / "etc/modules", "loop\ntpm_vtpm_proxy\n");
  run();
  EXPECT_EQ(line("fail", "tpm_vtpm_proxy"),
            "fail: kernel module tpm_vtpm_proxy is not loaded (fix: modprobe tpm_vtpm_proxy)");
}

TEST_F(DoctorTest, ModuleLoadedButNotAtBootWarns) {
  fs::remove(base_ / "etc/modules-load.d/vtpm-hook.conf");
  write(base_ / "usr/lib/modules-load.d/other.conf", "# tpm_vtpm_proxy\nloop\n");  // a comment
  run();
  EXPECT_EQ(exit_code(), 2);
  EXPECT_EQ(line("warn", "tpm_vtpm_proxy"),
            "warn: kernel module tpm_vtpm_proxy is loaded, but not at boot (fix: echo "
            "tpm_vtpm_proxy > /etc/modules-load.d/vtpm-hook.conf)");
}

TEST_F(DoctorTest, ModuleBuiltInOrAbsentFromTheKernel) {
  fs::remove(base_ / "sys/module/tpm_vtpm_proxy");  // built in without parameters: no sysfs dir
  write(base_ / "lib/modules/6.1.0-test/modules.builtin",
        "kernel/drivers/char/tpm/tpm_vtpm_proxy.ko\n");
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;
  line("ok", "kernel module tpm_vtpm_proxy is built into the kernel");
  write(base_ / "lib/modules/6.1.0-test/modules.builtin", "");
  write(base_ / "lib/modules/6.1.0-test/modules.dep", "kernel/fs/fuse/fuse.ko:\n");
  run();
  EXPECT_EQ(exit_code(), 1);
  line("fail",
       "kernel 6.1.0-test has no module tpm_vtpm_proxy (fix: a kernel built with "
       "CONFIG_TCG_VTPM_PROXY");
}

TEST_F(DoctorTest, VtpmxMissingOrNotACharacterDevice) {
  opts_.vtpmx = base_ / "dev/vtpmx";
  run();
  EXPECT_EQ(exit_code(), 1);
  EXPECT_EQ(line("fail", "vtpmx"),
            "fail: " + opts_.vtpmx + " is missing (fix: modprobe tpm_vtpm_proxy)");
  write(opts_.vtpmx, "");
  run();
  EXPECT_EQ(exit_code(), 1);
  line("fail", opts_.vtpmx + " is not a character device");
}

TEST_F(DoctorTest, PolicyValidOrNot) {
  write(opts_.policy, R"({"annotationFields": ["vtpmVersion"]})");
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;
  line("ok", "policy file " + opts_.policy + " is valid");

  write(opts_.policy, R"({"annotationFeilds": []})");
  run();
  EXPECT_EQ(exit_code(), 1);
  EXPECT_NE(line("fail", "annotationFeilds").find("(fix: correct " + opts_.policy),
            std::string::npos);

  // what setup refuses too: a statePathRoot that holds the hook's own state root
  write(opts_.policy, R"({"statePathRoots": [")" + base_.string() + R"("]})");
  run();
  EXPECT_EQ(exit_code(), 1);
  line("fail", "statePathRoots");

  // not root's to write alone
  write(opts_.policy, "{}", 0666);
  run();
  EXPECT_EQ(exit_code(), 1);
  line("fail", "writable by group or others");

  // named on the command line, it must exist
  fs::remove(opts_.policy);
  opts_.policy_required = true;
  run();
  EXPECT_EQ(exit_code(), 1);
  line("fail", "cannot open policy file " + opts_.policy);
}

TEST_F(DoctorTest, EmulatorUserMissingOrRoot) {
  opts_.emulator_user = "no-such-user-doctor";
  run();
  EXPECT_EQ(exit_code(), 1);
  EXPECT_EQ(line("fail", "emulator user"),
            "fail: emulator user (--emulator-user) no-such-user-doctor: no such user "
            "\"no-such-user-doctor\" (fix: adduser --system --group --no-create-home --home "
            "/nonexistent no-such-user-doctor)");
  for (const char* root : {"root", "0", "65534:0"}) {
    opts_.emulator_user = root;
    run();
    EXPECT_EQ(exit_code(), 1) << root;
    line("fail", "is root");
  }
}

TEST_F(DoctorTest, StateAndRunRoots) {
  fs::create_directories(opts_.state_root);
  ASSERT_EQ(::chmod(opts_.state_root.c_str(), 0700), 0);
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;
  line("ok", "state root (--state-root) " + opts_.state_root + " is root's, not writable");

  ASSERT_EQ(::chmod(opts_.state_root.c_str(), 0770), 0);
  run();
  EXPECT_EQ(exit_code(), 1);
  EXPECT_EQ(line("fail", "state root"), "fail: state root (--state-root) " + opts_.state_root +
                                            " is writable by group or others (fix: chmod go-w " +
                                            opts_.state_root + ")");

  ASSERT_EQ(::chmod(opts_.state_root.c_str(), 0700), 0);
  ASSERT_EQ(::chown(opts_.run_root.c_str(), 65534, 0), 0);
  run();
  EXPECT_EQ(exit_code(), 1);
  EXPECT_EQ(line("fail", "run root"), "fail: run root (--run-root) " + opts_.run_root +
                                          " belongs to uid 65534, not root (fix: chown root:root " +
                                          opts_.run_root + ")");

  // missing, beneath a directory others can write: someone could make it first
  fs::remove(opts_.run_root);
  ASSERT_EQ(::chmod((base_ / "run").c_str(), 01777), 0);
  run();
  EXPECT_EQ(exit_code(), 1);
  line("fail", "run root (--run-root) " + opts_.run_root + " does not exist, and " +
                   (base_ / "run").string() + " is writable by others than root");

  // a file in its place
  ASSERT_EQ(::chmod((base_ / "run").c_str(), 0755), 0);
  write(opts_.run_root, "");
  run();
  line("fail", "run root (--run-root) " + opts_.run_root + " is not a directory");
}

TEST_F(DoctorTest, HooksFileMissingOrElsewhere) {
  fs::remove(base_ / "usr/share/hooks.d/vtpm-hook.json");
  run();
  EXPECT_EQ(exit_code(), 2);
  line("warn", "no oci-hooks file vtpm-hook.json in " + (base_ / "etc/hooks.d").string() + " or " +
                   (base_ / "usr/share/hooks.d").string() +
                   ": podman and CRI-O give no TPM by annotation (fix: ");

  // the one in /etc overrides /usr/share's: it is the one that counts
  std::string hooks = slurp(fs::path(VTPM_SOURCE_DIR) / "examples/hooks.d/vtpm-hook.json.in");
  hooks.replace(hooks.find("@VTPM_HOOK_PATH@"), 16, "/usr/local/bin/vtpm-hook-old");
  write(base_ / "etc/hooks.d/vtpm-hook.json", hooks);
  run();
  EXPECT_EQ(exit_code(), 2);
  EXPECT_NE(line("warn", "runs /usr/local/bin/vtpm-hook-old, not this executable")
                .find("(fix: set \"path\": \"" + self_.string() + "\" in it)"),
            std::string::npos);

  // another path to the same file is this executable
  fs::create_symlink(self_, base_ / "link-to-hook");
  hooks.replace(hooks.find("/usr/local/bin/vtpm-hook-old"), 28, (base_ / "link-to-hook").string());
  write(base_ / "etc/hooks.d/vtpm-hook.json", hooks);
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;

  write(base_ / "etc/hooks.d/vtpm-hook.json", "{\"hook\": {}}");
  run();
  line("warn",
       "oci-hooks file " + (base_ / "etc/hooks.d/vtpm-hook.json").string() + " is unusable");
}

TEST_F(DoctorTest, CdiSpecMissingOrElsewhere) {
  fs::remove(base_ / "run/cdi/vtpm-hook.json");
  run();
  EXPECT_EQ(exit_code(), 2);
  EXPECT_EQ(line("warn", "CDI"),
            "warn: no CDI spec of kind vtpm-hook.io/tpm in " + (base_ / "etc/cdi").string() +
                " or " + (base_ / "run/cdi").string() +
                ": --device vtpm-hook.io/tpm=2 fails (fix: " + self_.string() + " cdi --output " +
                (base_ / "run/cdi/vtpm-hook.json").string() +
                "; at boot the package's vtpm-hook-cdi.service does it)");

  // any file name will do; another binary's hooks will not
  write_cdi(base_ / "etc/cdi/tpm.json", "/opt/old/vtpm-hook");
  run();
  EXPECT_EQ(exit_code(), 2);
  line("warn", "CDI spec " + (base_ / "etc/cdi/tpm.json").string() +
                   " runs /opt/old/vtpm-hook, not this executable");
  write_cdi(base_ / "etc/cdi/tpm.json", self_);
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;

  write(base_ / "etc/cdi/tpm.json", R"({"cdiVersion": "0.5.0", "kind": "vtpm-hook.io/tpm"})");
  run();
  EXPECT_EQ(exit_code(), 2);
  line("warn", "is invalid: CDI spec: \"devices\" is missing");
}

TEST_F(DoctorTest, DockerRuntimeEntry) {
  fs::remove(p_.docker_config);
  run();
  EXPECT_EQ(exit_code(), 2);
  EXPECT_EQ(
      line("warn", "Docker"),
      "warn: Docker: no " + p_.docker_config +
          ", so no runtime runs vtpm-runc (fix: echo '{\"runtimes\": {\"vtpm\": {\"path\": \"" +
          runc() + "\"}}}' > " + p_.docker_config + ", then restart dockerd)");

  write(p_.docker_config, R"({"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}})");
  run();
  EXPECT_EQ(exit_code(), 2);
  EXPECT_EQ(line("warn", "Docker"),
            "warn: Docker: no runtime in " + p_.docker_config + " runs " + runc() +
                " (fix: add \"runtimes\": {\"vtpm\": {\"path\": \"" + runc() +
                "\"}} to the object in " + p_.docker_config + ", then restart dockerd)");

  // a name on PATH counts (dockerd looks it up), the hook binary's own name does not (argv[0])
  fs::create_symlink(runc(), base_ / "engines/vtpm-runc");
  fs::create_symlink(self_, base_ / "engines/vtpm-hook");
  write(p_.docker_config, R"({"runtimes": {"v": {"path": "vtpm-hook"}}})");
  run();
  EXPECT_EQ(exit_code(), 2);
  write(p_.docker_config, R"({"runtimes": {"v": {"path": "vtpm-runc"}}})");
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;

  // no dockerd: nothing to check
  fs::remove(p_.docker_config);
  fs::remove(base_ / "engines/dockerd");
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;
  line("info", "Docker (dockerd) is not installed: not checked");
}

TEST_F(DoctorTest, ContainerdRuntimeEntry) {
  // no runc table in the file: the fix declares it too (else containerd loses its CRI plugin)
  const std::string toml_lines =
      "printf '%s\\n' '[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]' '  "
      "runtime_type = \"io.containerd.runc.v2\"' "
      "'[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vtpm]' '  "
      "runtime_type = \"io.containerd.runc.v2\"' "
      "'[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vtpm.options]' '  BinaryName "
      "= \"" +
      runc() + "\"'";
  write(p_.containerd_config, "version = 2\n# BinaryName = \"" + runc() + "\"\n");
  run();
  EXPECT_EQ(exit_code(), 2);
  EXPECT_EQ(line("warn", "containerd"), "warn: containerd: no runtime in " + p_.containerd_config +
                                            " has BinaryName " + runc() + " (fix: " + toml_lines +
                                            " >> " + p_.containerd_config +
                                            ", then restart containerd)");
  // a file that declares runc already: the fix adds only vtpm's tables
  write(p_.containerd_config,
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n");
  run();
  EXPECT_EQ(line("warn", "containerd").find("runtimes.runc]' "), std::string::npos) << lines_;
  // another binary of that name, in the table the fix would add: edit it instead
  write(p_.containerd_config, containerd_toml("/opt/old/vtpm-runc"));
  run();
  EXPECT_EQ(exit_code(), 2);
  EXPECT_EQ(
      line("warn", "containerd"),
      "warn: containerd: no runtime in " + p_.containerd_config + " has BinaryName " + runc() +
          " (fix: set BinaryName = \"" + runc() +
          "\" in its [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vtpm.options] "
          "table, then restart containerd)");

  // the fix, run as printed, makes it ok (here: no file yet, so with its version line)
  fs::remove(p_.containerd_config);
  run();
  std::string fix = line("warn", "containerd: no " + p_.containerd_config);
  fix = fix.substr(fix.find("(fix: ") + 6);
  ASSERT_NE(fix.find(" > " + p_.containerd_config + ", then"), std::string::npos) << fix;
  fix.resize(fix.find(", then"));
  ASSERT_EQ(std::system(fix.c_str()), 0) << fix;
  EXPECT_EQ(slurp(p_.containerd_config),
            "version = 2\n"
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
            "  runtime_type = \"io.containerd.runc.v2\"\n"
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vtpm]\n"
            "  runtime_type = \"io.containerd.runc.v2\"\n"
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vtpm.options]\n"
            "  BinaryName = \"" +
                runc() + "\"\n");
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;

  fs::remove(base_ / "engines/containerd");
  fs::remove(base_ / "engines/dockerd");
  fs::remove(p_.containerd_config);
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;
  line("info", "containerd is not installed: not checked");
}

TEST_F(DoctorTest, RuntimeWrapperBesideTheHook) {
  fs::remove(base_ / "usr/bin/vtpm-runc");
  run();
  EXPECT_EQ(exit_code(), 2);
  EXPECT_EQ(line("warn", runc() + " is not"),
            "warn: " + runc() +
                " is not this executable: Docker and containerd cannot reach the hook (fix: ln "
                "-sf vtpm-hook " +
                runc() + ")");
}

TEST_F(DoctorTest, CgroupVersion) {
  write(p_.mounts,
        "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
        "cgroup /sys/fs/cgroup/devices cgroup rw,nosuid,devices 0 0\n");
  run();
  EXPECT_EQ(exit_code(), 0) << lines_;
  line("info", "cgroup hybrid (v1, v2 at /sys/fs/cgroup/unified): setup writes");
  write(p_.mounts, "cgroup /sys/fs/cgroup/devices cgroup rw,devices 0 0\n");
  run();
  line("info", "cgroup v1: setup writes the container's devices.allow");
  write(p_.mounts, "cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n");
  run();
  EXPECT_EQ(exit_code(), 2);
  line("warn", "cgroup v1 without the devices controller");
  write(p_.mounts, "proc /proc proc rw 0 0\n");
  run();
  EXPECT_EQ(exit_code(), 2);
  line("warn", "no cgroup file system is mounted");
}

TEST_F(DoctorTest, UdevRuleMissingOrMasked) {
  fs::remove(base_ / "lib/udev/rules.d/70-vtpm-hook.rules");
  run();
  EXPECT_EQ(exit_code(), 2);
  line("warn", "no udev rule 70-vtpm-hook.rules in");
  // a link to /dev/null in /etc masks the one in /lib
  write(base_ / "lib/udev/rules.d/70-vtpm-hook.rules",
        slurp(fs::path(VTPM_SOURCE_DIR) / "udev/70-vtpm-hook.rules"));
  fs::create_directories(base_ / "etc/udev/rules.d");
  fs::create_symlink("/dev/null", base_ / "etc/udev/rules.d/70-vtpm-hook.rules");
  run();
  EXPECT_EQ(exit_code(), 2);
  line("warn", "udev rule " + (base_ / "etc/udev/rules.d/70-vtpm-hook.rules").string());
  // a copy whose rules are commented out keeps nothing either
  fs::remove(base_ / "etc/udev/rules.d/70-vtpm-hook.rules");
  std::string commented;
  std::istringstream rules(slurp(fs::path(VTPM_SOURCE_DIR) / "udev/70-vtpm-hook.rules"));
  for (std::string l; std::getline(rules, l);) commented += "# " + l + "\n";
  write(base_ / "lib/udev/rules.d/70-vtpm-hook.rules", commented);
  run();
  EXPECT_EQ(exit_code(), 2);
  line("warn",
       "udev rule " + (base_ / "lib/udev/rules.d/70-vtpm-hook.rules").string() + " does not keep");
}

TEST_F(DoctorTest, BlockingWinsOverWarnings) {
  fs::remove(base_ / "run/cdi/vtpm-hook.json");
  run();
  EXPECT_EQ(exit_code(), 2);
  opts_.vtpmx = base_ / "dev/vtpmx";
  run();
  EXPECT_TRUE(report_.blocking);
  EXPECT_TRUE(report_.warned);
  EXPECT_EQ(exit_code(), 1);
}

}  // namespace
}  // namespace vtpm
