// The emulator's seccomp sandbox, with real libtpms behind it, in forked children.
#include "emulator/sandbox.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "emulator/emulator_process.h"
#include "state/state_store.h"
#include "tpm/local_ca.h"
#include "tpm/measure.h"
#include "tpm/provision.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

// Runs body in a child; returns its wait status.
int in_child(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

// A workload's TPM 2 command, as bytes, with an empty-password session (TPM_RS_PW).
std::vector<uint8_t> command(uint32_t cc, std::vector<uint32_t> handles,
                             const std::vector<uint8_t>& params) {
  std::vector<uint8_t> body;
  for (uint32_t h : handles) proto::put_u32(body, h);
  proto::put_u32(body, 9);  // authorization area: handle, empty nonce, attributes, empty hmac
  proto::put_u32(body, TPM2_RS_PW);
  body.insert(body.end(), {0, 0, 0, 0, 0});
  body.insert(body.end(), params.begin(), params.end());
  return proto::command(proto::kTpm2StSessions, cc, body);
}

std::vector<uint8_t> bytes(std::initializer_list<int> b) { return {b.begin(), b.end()}; }

uint32_t rc_of(const std::vector<uint8_t>& r) { return proto::response_code(r); }

TEST(Sandbox, ForbiddenCallKillsTheProcess) {
  const int status = in_child([] {
    enter_emulator_sandbox();
    ::socket(AF_INET, SOCK_STREAM, 0);
    return 0;
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}

// A compromised emulator must not lower another process's limits (swtpm's profile blocks this
// too); its own stay readable and settable, as glibc needs.
TEST(Sandbox, PrlimitOnlyOnItself) {
  const pid_t victim = ::fork();
  if (victim == 0) {
    ::pause();
    ::_exit(0);
  }
  const int status = in_child([victim] {
    enter_emulator_sandbox();
    rlimit lim{};
    if (::prlimit(0, RLIMIT_NOFILE, nullptr, &lim) != 0) return 10;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return 11;
    const rlimit low{1, 1};
    if (::prlimit(victim, RLIMIT_NOFILE, &low, nullptr) == 0) return 12;
    if (errno != EPERM) return 13;
    if (::prlimit(::getppid(), RLIMIT_NOFILE, nullptr, &lim) == 0) return 14;
    return 0;
  });
  rlimit after{};
  ASSERT_EQ(::prlimit(victim, RLIMIT_NOFILE, nullptr, &after), 0);
  ::kill(victim, SIGKILL);
  ::waitpid(victim, nullptr, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_GT(after.rlim_cur, 1u);  // the other process's limit is untouched
}

// One call under the filter and what it must give: 0 (allowed: the call's own result is >= 0)
// or an errno (refused).
struct Probe {
  const char* name;
  std::function<long()> call;
  int want_errno;
};

// Runs the probes in one sandboxed child (after setup() there, before the filter); the name of
// the first probe that did not give what it must, or "" when all did.
std::string first_wrong(const std::function<void()>& setup, const std::vector<Probe>& probes) {
  int pfd[2];
  if (::pipe(pfd) != 0) return "pipe failed";
  const int status = in_child([&] {
    ::close(pfd[0]);
    setup();
    enter_emulator_sandbox();
    for (size_t i = 0; i < probes.size(); ++i) {
      errno = 0;
      const long r = probes[i].call();
      const bool ok = probes[i].want_errno == 0 ? r >= 0 : r == -1 && errno == probes[i].want_errno;
      if (!ok) {
        const std::string msg = std::string(probes[i].name) + ": returned " + std::to_string(r) +
                                ", errno " + std::to_string(errno);
        (void)!::write(pfd[1], msg.data(), msg.size());
        return 1;
      }
    }
    return 0;
  });
  ::close(pfd[1]);
  char buf[512];
  const ssize_t n = ::read(pfd[0], buf, sizeof buf);
  ::close(pfd[0]);
  if (!WIFEXITED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

std::filesystem::path scratch_dir(const char* what) {
  const auto dir = std::filesystem::temp_directory_path() /
                   (std::string("vtpm-") + what + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Issue 18, hole 2: F_SETOWN + F_SETSIG + F_NOTIFY (or O_ASYNC) had the kernel send any signal to
// any process. Only the commands the code and glibc use pass.
TEST(Sandbox, FcntlOnlyTheCommandsTheCodeUses) {
  const auto dir = scratch_dir("fcntl");
  int dfd = -1, file = -1, pipe_fds[2] = {-1, -1};
  auto setup = [&] {
    dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    file = ::open((dir / "f").c_str(), O_RDWR | O_CREAT, 0600);
    if (dfd < 0 || file < 0 || ::pipe(pipe_fds) != 0) ::_exit(99);
  };
  auto fc = [](const int& fd, int cmd, long arg) {
    return [&fd, cmd, arg] { return ::syscall(SYS_fcntl, fd, cmd, arg); };
  };
  static struct flock lk {};
  lk.l_type = F_WRLCK;
  lk.l_whence = SEEK_SET;
  const long lock = reinterpret_cast<long>(&lk);
  static f_owner_ex owner{F_OWNER_PID, 1};
  const std::vector<Probe> probes = {
      {"F_GETFD", fc(file, F_GETFD, 0), 0},
      {"F_SETFD", fc(file, F_SETFD, FD_CLOEXEC), 0},
      {"F_GETFL", fc(file, F_GETFL, 0), 0},
      {"F_SETFL O_NONBLOCK", fc(pipe_fds[0], F_SETFL, O_NONBLOCK), 0},
      {"F_DUPFD_CLOEXEC", fc(file, F_DUPFD_CLOEXEC, 0), 0},
      {"F_GETLK", fc(file, F_GETLK, lock), 0},
      {"F_SETLK", fc(file, F_SETLK, lock), 0},
      {"F_OFD_GETLK", fc(file, F_OFD_GETLK, lock), 0},
      {"F_SETFL O_ASYNC", fc(pipe_fds[0], F_SETFL, O_ASYNC), EPERM},
      {"F_SETFL O_ASYNC|O_NONBLOCK", fc(pipe_fds[0], F_SETFL, O_ASYNC | O_NONBLOCK), EPERM},
      {"F_SETOWN", fc(dfd, F_SETOWN, 1), EPERM},
      {"F_SETOWN of a pipe", fc(pipe_fds[0], F_SETOWN, 1), EPERM},
      {"F_SETOWN_EX", fc(dfd, F_SETOWN_EX, reinterpret_cast<long>(&owner)), EPERM},
      {"F_GETOWN", fc(dfd, F_GETOWN, 0), EPERM},
      {"F_SETSIG", fc(dfd, F_SETSIG, SIGKILL), EPERM},
      {"F_NOTIFY", fc(dfd, F_NOTIFY, DN_CREATE | DN_MULTISHOT), EPERM},
      {"F_SETLEASE", fc(file, F_SETLEASE, F_RDLCK), EPERM},
      {"F_SETPIPE_SZ", fc(pipe_fds[0], F_SETPIPE_SZ, 1 << 20), EPERM},
      {"F_DUPFD", fc(file, F_DUPFD, 0), EPERM},
      {"F_ADD_SEALS", fc(file, F_ADD_SEALS, F_SEAL_WRITE), EPERM},
      // The kernel reads the command as 32 bits: high bits set must not pass as another command.
      {"(1 << 32) | F_SETOWN", [&] { return ::syscall(SYS_fcntl, dfd, (1L << 32) | F_SETOWN, 1L); },
       EPERM},
  };
  const std::string wrong = first_wrong(setup, probes);
  std::filesystem::remove_all(dir);
  EXPECT_EQ(wrong, "");
}

// The F_NOTIFY route end to end without the filter, so the probe above refuses the real thing:
// the same calls in a plain child deliver the signal to another process.
TEST(Sandbox, FcntlNotifyRouteSignalsAnotherProcessWithoutTheFilter) {
  const auto dir = scratch_dir("notify");
  const pid_t victim = ::fork();
  if (victim == 0) {
    ::pause();
    ::_exit(0);
  }
  const int status = in_child([&] {
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (::fcntl(dfd, F_SETOWN, victim) != 0 || ::fcntl(dfd, F_SETSIG, SIGKILL) != 0 ||
        ::fcntl(dfd, F_NOTIFY, DN_CREATE | DN_MULTISHOT) != 0)
      return 10;
    ::close(::open((dir / "x").c_str(), O_CREAT | O_WRONLY, 0600));
    return 0;
  });
  // dnotify sends the signal while the file is created: it is pending before the child exits.
  int vstatus = 0;
  if (::waitpid(victim, &vstatus, WNOHANG) == 0) {
    ::kill(victim, SIGTERM);  // no effect once SIGKILL is pending; ends the victim otherwise
    ::waitpid(victim, &vstatus, 0);
  }
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ASSERT_TRUE(WIFSIGNALED(vstatus));
  EXPECT_EQ(WTERMSIG(vstatus), SIGKILL);
}

TEST(Sandbox, SignalsOnlyToItself) {
  const pid_t victim = ::fork();
  if (victim == 0) {
    ::pause();
    ::_exit(0);
  }
  int victim_pidfd = -1;
  auto setup = [&] {
    victim_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, victim, 0));
    if (victim_pidfd < 0) ::_exit(99);
    (void)::signal(SIGUSR1, SIG_IGN);
  };
  siginfo_t info{};
  info.si_code = SI_QUEUE;
  auto sys = [](long nr, long a, long b, long c) { return [=] { return ::syscall(nr, a, b, c); }; };
  const std::vector<Probe> probes = {
      {"kill(self)", [] { return static_cast<long>(::kill(::getpid(), SIGUSR1)); }, 0},
      {"raise", [] { return static_cast<long>(::raise(SIGUSR1)); }, 0},
      {"tgkill(self)", [] { return ::syscall(SYS_tgkill, ::getpid(), ::gettid(), SIGUSR1); }, 0},
      {"tkill(self)", [] { return ::syscall(SYS_tkill, ::gettid(), SIGUSR1); }, 0},
      {"kill(victim)", sys(SYS_kill, victim, SIGKILL, 0), EPERM},
      {"kill(victim, 0)", sys(SYS_kill, victim, 0, 0), EPERM},
      {"kill(parent)", [] { return ::syscall(SYS_kill, ::getppid(), 0); }, EPERM},
      {"kill(-1)", sys(SYS_kill, -1, 0, 0), EPERM},
      {"kill(0)", sys(SYS_kill, 0, 0, 0), EPERM},
      {"kill(-victim)", sys(SYS_kill, -victim, 0, 0), EPERM},
      {"kill((1 << 32) | victim)", sys(SYS_kill, (1L << 32) | victim, SIGKILL, 0), EPERM},
      {"tgkill(victim)", sys(SYS_tgkill, victim, victim, SIGKILL), EPERM},
      {"tkill(victim)", sys(SYS_tkill, victim, SIGKILL, 0), EPERM},
      {"rt_sigqueueinfo(victim)",
       sys(SYS_rt_sigqueueinfo, victim, SIGKILL, reinterpret_cast<long>(&info)), EPERM},
      {"rt_tgsigqueueinfo(victim)",
       [&] { return ::syscall(SYS_rt_tgsigqueueinfo, victim, victim, SIGKILL, &info); }, EPERM},
      {"pidfd_send_signal(victim)",
       [&] { return ::syscall(SYS_pidfd_send_signal, victim_pidfd, SIGKILL, nullptr, 0); }, EPERM},
  };
  const std::string wrong = first_wrong(setup, probes);
  const bool victim_alive = ::waitpid(victim, nullptr, WNOHANG) == 0;
  ::kill(victim, SIGKILL);
  ::waitpid(victim, nullptr, 0);
  EXPECT_EQ(wrong, "");
  EXPECT_TRUE(victim_alive);
}

// abort() (std::terminate, assertions) still ends the process with SIGABRT, not SIGSYS.
TEST(Sandbox, AbortStillAborts) {
  const int status = in_child([]() -> int {
    enter_emulator_sandbox();
    std::abort();
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGABRT);
}

// Calls that only an attacker makes kill the process before they act.
TEST(Sandbox, AttackerCallsKill) {
  const auto dir = scratch_dir("kill");
  const pid_t victim = ::fork();
  if (victim == 0) {
    ::pause();
    ::_exit(0);
  }
  const std::string a = (dir / "a").string(), b = (dir / "b").string();
  const std::vector<std::pair<const char*, std::function<long()>>> calls = {
      {"ptrace", [&] { return ::syscall(SYS_ptrace, PTRACE_ATTACH, victim, 0, 0); }},
      {"process_vm_readv", [&] { return ::syscall(SYS_process_vm_readv, victim, 0, 0, 0, 0, 0); }},
      {"process_vm_writev",
       [&] { return ::syscall(SYS_process_vm_writev, victim, 0, 0, 0, 0, 0); }},
      {"pidfd_open", [&] { return ::syscall(SYS_pidfd_open, victim, 0); }},
      {"pidfd_getfd", [] { return ::syscall(SYS_pidfd_getfd, 0, 0, 0); }},
      {"inotify_init1", [] { return ::syscall(SYS_inotify_init1, 0); }},
      {"fanotify_init", [] { return ::syscall(SYS_fanotify_init, 0, 0); }},
      {"link", [&] { return ::syscall(SYS_link, a.c_str(), b.c_str()); }},
      {"linkat",
       [&] { return ::syscall(SYS_linkat, AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), 0); }},
      {"symlink", [&] { return ::syscall(SYS_symlink, a.c_str(), b.c_str()); }},
      {"symlinkat", [&] { return ::syscall(SYS_symlinkat, a.c_str(), AT_FDCWD, b.c_str()); }},
      {"mknod", [&] { return ::syscall(SYS_mknod, b.c_str(), S_IFIFO | 0600, 0); }},
      {"mknodat", [&] { return ::syscall(SYS_mknodat, AT_FDCWD, b.c_str(), S_IFIFO | 0600, 0); }},
  };
  ::close(::open(a.c_str(), O_CREAT | O_WRONLY, 0600));
  for (const auto& [name, call] : calls) {
    const int status = in_child([&] {
      enter_emulator_sandbox();
      call();
      return 0;
    });
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) << name << ": status " << status;
  }
  ::kill(victim, SIGKILL);
  ::waitpid(victim, nullptr, 0);
  EXPECT_FALSE(std::filesystem::exists(b));  // nothing was made before the kill
  std::filesystem::remove_all(dir);
}

// Unused by the emulator, harmless to refuse: EPERM (a library probing them keeps working).
TEST(Sandbox, RefusedCallsFailWithEperm) {
  const auto dir = scratch_dir("eperm");
  const std::string f = (dir / "f").string();
  int fd = -1;
  auto setup = [&] {
    fd = ::open(f.c_str(), O_RDWR | O_CREAT, 0600);
    if (fd < 0) ::_exit(99);
  };
  int on = 1;
  const std::vector<Probe> probes = {
      {"ioctl FIONBIO", [&] { return ::syscall(SYS_ioctl, fd, FIONBIO, &on); }, EPERM},
      {"ioctl FIOASYNC", [&] { return ::syscall(SYS_ioctl, fd, FIOASYNC, &on); }, EPERM},
      {"ioctl FIOSETOWN", [&] { return ::syscall(SYS_ioctl, fd, FIOSETOWN, &on); }, EPERM},
      {"chmod", [&] { return ::syscall(SYS_chmod, f.c_str(), 0666); }, EPERM},
      {"fchmod", [&] { return ::syscall(SYS_fchmod, fd, 0666); }, EPERM},
      {"fchmodat", [&] { return ::syscall(SYS_fchmodat, AT_FDCWD, f.c_str(), 0666); }, EPERM},
      {"chown", [&] { return ::syscall(SYS_chown, f.c_str(), 1, 1); }, EPERM},
      {"fchown", [&] { return ::syscall(SYS_fchown, fd, 1, 1); }, EPERM},
      {"lchown", [&] { return ::syscall(SYS_lchown, f.c_str(), 1, 1); }, EPERM},
      {"fchownat", [&] { return ::syscall(SYS_fchownat, AT_FDCWD, f.c_str(), 1, 1, 0); }, EPERM},
      {"prctl", [] { return ::syscall(SYS_prctl, PR_GET_SECCOMP, 0, 0, 0, 0); }, EPERM},
      {"capget", [] { return ::syscall(SYS_capget, nullptr, nullptr); }, EPERM},
  };
  const std::string wrong = first_wrong(setup, probes);
  struct stat st {};
  ::stat(f.c_str(), &st);
  std::filesystem::remove_all(dir);
  EXPECT_EQ(wrong, "");
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST(Sandbox, ExecKillsTheProcess) {
  const int status = in_child([] {
    enter_emulator_sandbox();
    char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
    ::execv("/bin/true", argv);
    return 3;
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}

TEST(Sandbox, UnlistedCallFailsWithEperm) {
  const int status = in_child([] {
    enter_emulator_sandbox();
    char buf[256];
    return ::getcwd(buf, sizeof buf) == nullptr && errno == EPERM ? 0 : 1;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Sandbox, NoCapabilitiesAndNoNewPrivs) {
  const int status = in_child([] {
    enter_emulator_sandbox();
    // Dropped CAP_CHOWN/CAP_DAC_OVERRIDE: root can no longer read a file it may not.
    FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return 10;
    char line[256];
    bool caps_zero = false, nnp = false;
    while (std::fgets(line, sizeof line, f)) {
      if (std::string(line).rfind("CapEff:\t0000000000000000", 0) == 0) caps_zero = true;
      if (std::string(line).rfind("NoNewPrivs:\t1", 0) == 0) nnp = true;
    }
    std::fclose(f);
    return caps_zero && nnp ? 0 : 11;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// The emulator user's process keeps no capability anywhere: not in its bounding set either,
// which only a process that still has CAP_SETPCAP can empty (become does, before setresuid).
TEST(Sandbox, AnEmulatorUserKeepsNoCapabilitySet) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to change uid";
  const int status = in_child([] {
    become({65534, 65534});
    enter_emulator_sandbox();
    FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return 10;
    char line[256];
    int zero = 0;
    while (std::fgets(line, sizeof line, f))
      for (const char* set : {"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"})
        if (std::string(line) == std::string(set) + "\t0000000000000000\n") ++zero;
    std::fclose(f);
    return zero == 5 ? 0 : 20 + zero;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "capability sets still set: " << 5 - (WEXITSTATUS(status) - 20);
}

TEST(Sandbox, ConfinedToTheStateDir) {
  if (::geteuid() != 0) GTEST_SKIP() << "chroot needs root";
  const auto dir =
      std::filesystem::temp_directory_path() / ("vtpm-confine-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const int status = in_child([&] {
    StateStore store(dir.string(), TpmVersion::V2, /*create=*/false);
    confine_to_dir(store.dir_fd());
    enter_emulator_sandbox();
    if (::access("/etc/passwd", F_OK) == 0) return 30;  // the host is out of sight
    if (::access("/.lock", F_OK) != 0) return 31;       // its own state dir is "/"
    store.store("permall", std::vector<uint8_t>{0, 1, 2});
    return store.load("permall") ? 0 : 32;
  });
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Sandbox, TpmWorkloadRunsUnderTheFilter) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("vtpm-sandbox-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const int status = in_child([&] {
    StateStore store(dir.string(), TpmVersion::V2, /*create=*/true);
    TpmEngine engine(store);
    confine_to_dir(store.dir_fd());
    enter_emulator_sandbox();
    if (rc_of(engine.process(proto::startup_command(TpmVersion::V2, true))) != 0) return 20;
    const auto get_random = bytes({0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x7b, 0, 8});
    if (rc_of(engine.process(get_random)) != 0) return 21;
    auto digests = bytes({0, 0, 0, 1, 0x00, 0x0b});  // one SHA-256 digest
    digests.insert(digests.end(), 32, 0x01);
    if (rc_of(engine.process(command(0x182, {16}, digests))) != 0) return 22;  // PCR_Extend
    // NV_DefineSpace(owner, 0x01500020: 8 bytes, ownerread|ownerwrite), then NV_Write.
    const auto nv_public =
        bytes({0, 0, 0, 14, 0x01, 0x50, 0, 0x20, 0, 0x0b, 0, 2, 0, 2, 0, 0, 0, 8});
    if (rc_of(engine.process(command(0x12a, {0x40000001}, nv_public))) != 0) return 23;
    const auto nv_data = bytes({0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0});
    if (rc_of(engine.process(command(0x137, {0x40000001, 0x01500020}, nv_data))) != 0) return 24;
    // CreatePrimary(owner, ECC P-256 restricted decryption key): key generation under the filter.
    const auto ecc_template = bytes(
        {0,    4,    0,    0,    0,    0,  // sensitive: no auth, no data
         0,    0x1a, 0x00, 0x23, 0x00, 0x0b, 0x00, 0x03, 0x00, 0x72, 0,    0,
         0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x00, 0x03, 0x00, 0x10,
         0,    0,    0,    0,    0,    0,    0,    0,    0,    0});  // outsideInfo, creationPCR
    if (rc_of(engine.process(command(0x131, {0x40000001}, ecc_template))) != 0) return 25;
    if (rc_of(engine.process(proto::shutdown_state_command(TpmVersion::V2))) != 0) return 26;
    return 0;
  });
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// The project's own commands (tpm2-tss's SAPI over the in-process TCTI) where the emulator and
// the provisioning child send them: confined to the state dir, under the filter and the
// resource bounds; all of it must work without a syscall the filter refuses.
TEST(Sandbox, Tss2RunsUnderTheFilter) {
  if (::geteuid() != 0) GTEST_SKIP() << "chroot needs root";
  const auto dir = scratch_dir("tss2");
  const auto ca_dir = scratch_dir("tss2-ca");
  // A certificate to write into the EK NV indices: any valid DER does (signed outside).
  const LocalCa ca = load_or_create_ca(ca_dir / "ca.key", ca_dir / "ca.pem");
  EkPublic any;
  any.rsa = false;
  {
    const PkeyPtr k(EVP_EC_gen("P-256"), EVP_PKEY_free);
    uint8_t point[65];
    size_t len = 0;
    ASSERT_EQ(EVP_PKEY_get_octet_string_param(k.get(), OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point,
                                              &len),
              1);
    any.x.assign(point + 1, point + 33);
    any.y.assign(point + 33, point + 65);
  }
  const auto der = make_ek_certificate(any, ca, "sandbox test");
  int pfd[2];
  ASSERT_EQ(::pipe(pfd), 0);
  const int status = in_child([&] {
    ::close(pfd[0]);
    try {
      UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      const StateStore store =
          open_confined_state(std::move(dir_fd), "tss2", TpmVersion::V2, std::nullopt, {});
      TpmEngine engine(store);
      apply_pcr_banks(engine, {"sha1", "sha256"});
      create_ek_certificates(
          engine, [&](const EkPublic&) { return der; }, store);
      power_on(engine, /*close_platform=*/true);
      const EventDigests e{{"sha1", std::vector<uint8_t>(20, 1)},
                           {"sha256", std::vector<uint8_t>(32, 2)}};
      if (measure_launch(engine, 21, {e, e}) != std::vector<std::string>{"sha1", "sha256"})
        return 2;
      save_state(engine);
    } catch (const std::exception& ex) {
      (void)!::write(pfd[1], ex.what(), std::strlen(ex.what()));
      return 1;
    }
    return 0;
  });
  ::close(pfd[1]);
  char buf[512];
  const ssize_t n = ::read(pfd[0], buf, sizeof buf);
  ::close(pfd[0]);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(ca_dir);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

}  // namespace
}  // namespace vtpm
