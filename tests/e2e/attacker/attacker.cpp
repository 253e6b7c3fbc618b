// Test-only LD_PRELOAD object for tests/e2e/compromise-tests.sh (issue 18): the "compromised
// emulator". Loaded into the hook through the prestart hook's env, it interposes libtpms'
// TPMLIB_Process; the emulator (forked from the hook, sandboxed before its first command) calls
// it for every TPM command. On the trigger command (TPM2_GetRandom of kTriggerBytes bytes, which
// the attacked container sends) it runs, as code an exploit of libtpms would run, every attack
// below against the victims named in its environment and writes what each call returned to
// /attack-report (its root: the TPM's state directory). The verdicts are the test script's,
// judged from outside; the report only says what the attacker saw. Never installed.
//
// Environment (set in the hook's env; the attacker is assumed to know these):
//   VTPM_ATTACK_VICTIMS      pids to signal, move, limit and trace (the first: ptrace's target)
//   VTPM_ATTACK_OTHER_STATE  another tenant's state directory (absolute)
//   VTPM_ATTACK_HOST_FILE    a host file to rewrite (absolute)
//   VTPM_ATTACK_PLANT_DIR    a state directory the next provisioning would use (absolute)
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <libtpms/tpm_library.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace {

using ProcessFn = TPM_RESULT (*)(unsigned char**, uint32_t*, uint32_t*, unsigned char*, uint32_t);

constexpr uint32_t kGetRandom = 0x17b;      // TPM2_CC_GetRandom
constexpr uint16_t kTriggerBytes = 0xbeef;  // no kernel or tool asks for this many
constexpr int kMaxFd = 1024;

ProcessFn real_process = nullptr;
std::vector<long> victims;
std::string other_state, host_file, plant_dir;
bool done = false;
int report = -1;

// Before any sandbox: libtpms' entry point. (A plain pointer: constant-initialised, so no C++
// initialiser runs after this and resets it; the environment is read when the attack starts.)
__attribute__((constructor)) void init() {
  real_process = reinterpret_cast<ProcessFn>(::dlsym(RTLD_NEXT, "TPMLIB_Process"));
}

void read_targets() {
  auto env = [](const char* n) {
    const char* v = std::getenv(n);
    return std::string(v ? v : "");
  };
  std::istringstream in(env("VTPM_ATTACK_VICTIMS"));
  for (long p; in >> p;) victims.push_back(p);
  other_state = env("VTPM_ATTACK_OTHER_STATE");
  host_file = env("VTPM_ATTACK_HOST_FILE");
  plant_dir = env("VTPM_ATTACK_PLANT_DIR");
}

void say(const char* fmt, ...) {
  char buf[8192];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n <= 0) return;
  size_t len = std::min(static_cast<size_t>(n), sizeof buf - 2);
  buf[len++] = '\n';
  (void)!::write(report, buf, len);
}

// "ok" or the errno's name: what the report says of each call.
std::string res(long r) {
  if (r >= 0) return "ok";
  const char* name = strerrorname_np(errno);
  return name ? name : std::to_string(errno);
}

std::string basename_of(const std::string& p) { return p.substr(p.find_last_of('/') + 1); }

std::string dev_ino(const struct stat& st) {
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

std::vector<int> open_fds() {
  std::vector<int> fds;
  for (int fd = 0; fd < kMaxFd; ++fd)
    if (fd != report && ::fcntl(fd, F_GETFD) >= 0) fds.push_back(fd);
  return fds;
}

const char* kind(mode_t m) {
  if (S_ISDIR(m)) return "dir";
  if (S_ISREG(m)) return "reg";
  if (S_ISSOCK(m)) return "sock";
  if (S_ISFIFO(m)) return "fifo";
  if (S_ISCHR(m)) return "chr";
  return "other";  // anon inodes (pidfd, signalfd)
}

// It runs in the real emulator, confined: its pid, uid, the filter (a harmless call the filter
// refuses), capabilities (capget is refused too: judged from outside), '/' = its state dir.
void proof() {
  struct stat root {};
  (void)::stat("/", &root);
  char cwd[256];
  const long g = ::syscall(SYS_getcwd, cwd, sizeof cwd);
  const std::string getcwd_res = res(g);
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  const long c = ::syscall(SYS_capget, &hdr, data);
  say("PROOF pid=%d uid=%d euid=%d root=%s lock=%s getcwd=%s capget=%s capeff=%x", ::getpid(),
      ::getuid(), ::geteuid(), dev_ino(root).c_str(), ::access("/.lock", F_OK) == 0 ? "yes" : "no",
      getcwd_res.c_str(), res(c).c_str(), c == 0 ? data[0].effective : 0);
}

void inventory(const std::vector<int>& fds) {
  for (int fd : fds) {
    struct stat st {};
    const long r = ::fstat(fd, &st);
    say("FD %d %s %s flags=0x%x %s", fd, kind(st.st_mode), dev_ino(st).c_str(),
        ::fcntl(fd, F_GETFL), res(r).c_str());
  }
}

// Opens path (relative to dirfd); what it reached, and the bytes of a file it read.
void try_open(const char* cls, int dirfd, const std::string& path, int flags) {
  const int fd = ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) {
    say("PROBE %s fd=%d open %s -> %s", cls, dirfd, path.c_str(), res(-1).c_str());
    return;
  }
  struct stat st {};
  (void)::fstat(fd, &st);
  std::string got;
  if ((flags & O_ACCMODE) != O_RDONLY)
    got = " write " + res(::write(fd, "PWNED\n", 6));
  else if (S_ISREG(st.st_mode)) {  // its bytes in hex: a secret read shows up in the report
    unsigned char buf[65536];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    got = " read " + std::to_string(n) + " hex ";
    static const char hex[] = "0123456789abcdef";
    for (ssize_t i = 0; i < n && i < 3000; ++i) got += {hex[buf[i] >> 4], hex[buf[i] & 15]};
  }
  say("PROBE %s fd=%d open %s -> ok %s %s%s", cls, dirfd, path.c_str(), kind(st.st_mode),
      dev_ino(st).c_str(), got.c_str());
  ::close(fd);
}

void escapes(const std::vector<int>& fds, const struct stat& root) {
  std::vector<int> dirs = {AT_FDCWD};
  for (int fd : fds) {
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) dirs.push_back(fd);
  }
  const std::string up = "../../../../../../../..";
  const std::string other = basename_of(other_state);
  for (int d : dirs) {
    struct stat st {};
    const int fd = ::openat(d, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0 && ::fstat(fd, &st) == 0)
      say("PROBE openat fd=%d open .. -> ok %s%s", d, dev_ino(st).c_str(),
          st.st_dev == root.st_dev && st.st_ino == root.st_ino ? " (its own root)" : " ESCAPED");
    else
      say("PROBE openat fd=%d open .. -> %s", d, res(-1).c_str());
    if (fd >= 0) ::close(fd);
    try_open("openat", d, up + host_file, O_WRONLY | O_APPEND);
    try_open("openat", d, up + "/etc/hostname", O_RDONLY);
    try_open("other-tpm", d, "../" + other + "/tpm2-00.permall", O_RDONLY);
    try_open("other-tpm", d, up + other_state + "/tpm2-00.permall", O_RDONLY);
    try_open("other-tpm", d, up + other_state + "/tpm2-00.permall", O_WRONLY | O_APPEND);
    try_open("other-tpm", d, "../" + other + "/planted", O_WRONLY | O_CREAT | O_EXCL);
  }
  try_open("openat", AT_FDCWD, host_file, O_WRONLY | O_APPEND);
  try_open("other-tpm", AT_FDCWD, other_state + "/tpm2-00.permall", O_RDONLY);
}

// State files the next provisioning of another TPM would unmarshal.
void plant() {
  for (const std::string& dir : {plant_dir, other_state}) {
    for (const char* f : {"tpm2-00.permall", "tpm2-00.volatilestate"}) {
      try_open("plant", AT_FDCWD, dir + "/" + f, O_WRONLY | O_CREAT | O_EXCL);
      try_open("plant", AT_FDCWD, "../" + basename_of(dir) + "/" + f, O_WRONLY | O_CREAT | O_EXCL);
    }
    say("PROBE plant mkdir %s -> %s", dir.c_str(), res(::mkdir(dir.c_str(), 0700)).c_str());
  }
  // Its own directory is its own state (what provisioning must refuse is issue 18's hole 3).
  const int fd = ::open("/tpm2-00.volatilestate.attack", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  say("INFO own-dir plant -> %s", res(fd).c_str());
  if (fd >= 0) {
    ::close(fd);
    ::unlink("/tpm2-00.volatilestate.attack");
  }
}

void limits() {
  for (long v : victims) {
    const rlimit low{4, 4};
    say("PROBE prlimit %ld NOFILE -> %s", v,
        res(::syscall(SYS_prlimit64, v, RLIMIT_NOFILE, &low, nullptr)).c_str());
    const rlimit core{0, 0};
    say("PROBE prlimit %ld CORE -> %s", v,
        res(::syscall(SYS_prlimit64, v, RLIMIT_CORE, &core, nullptr)).c_str());
  }
}

// A victim's pid into every fd: a cgroup.procs fd opened by root moves it (hole 1).
void write_pids(const std::vector<int>& fds) {
  for (long v : victims) {
    const std::string s = std::to_string(v) + "\n";
    for (int fd : fds)
      say("PROBE write-pid fd=%d pid=%ld -> %s", fd, v,
          res(::write(fd, s.data(), s.size())).c_str());
  }
}

void signals(const std::vector<int>& fds) {
  siginfo_t info{};
  info.si_signo = SIGKILL;
  info.si_code = SI_QUEUE;
  for (long v : victims) {
    say("PROBE kill kill(%ld, SIGKILL) -> %s", v, res(::syscall(SYS_kill, v, SIGKILL)).c_str());
    say("PROBE kill tgkill(%ld) -> %s", v, res(::syscall(SYS_tgkill, v, v, SIGKILL)).c_str());
    say("PROBE kill tkill(%ld) -> %s", v, res(::syscall(SYS_tkill, v, SIGKILL)).c_str());
    say("PROBE kill rt_sigqueueinfo(%ld) -> %s", v,
        res(::syscall(SYS_rt_sigqueueinfo, v, SIGKILL, &info)).c_str());
    say("PROBE kill rt_tgsigqueueinfo(%ld) -> %s", v,
        res(::syscall(SYS_rt_tgsigqueueinfo, v, v, SIGKILL, &info)).c_str());
  }
  // Signal 0: the permission check alone (a success would kill everything of its uid).
  say("PROBE kill kill(-1, 0) -> %s", res(::syscall(SYS_kill, -1, 0)).c_str());
  for (int fd : fds)  // the container's pidfd, any other pidfd it holds
    say("PROBE kill pidfd_send_signal(fd=%d, 0) -> %s", fd,
        res(::syscall(SYS_pidfd_send_signal, fd, 0, nullptr, 0)).c_str());
}

// F_SETOWN + F_SETSIG(SIGKILL), then F_NOTIFY on a directory + a file created in it, or O_ASYNC
// + I/O on the fd: the kernel sends the signal to the owner (hole 2).
void fcntl_routes(const std::vector<int>& fds) {
  for (long v : victims) {
    for (int fd : fds) {
      struct stat st {};
      (void)::fstat(fd, &st);
      const f_owner_ex owner{F_OWNER_PID, static_cast<pid_t>(v)};
      say("PROBE fcntl fd=%d F_SETOWN %ld -> %s", fd, v,
          res(::syscall(SYS_fcntl, fd, F_SETOWN, v)).c_str());
      say("PROBE fcntl fd=%d F_SETOWN_EX %ld -> %s", fd, v,
          res(::syscall(SYS_fcntl, fd, F_SETOWN_EX, &owner)).c_str());
      say("PROBE fcntl fd=%d F_SETSIG SIGKILL -> %s", fd,
          res(::syscall(SYS_fcntl, fd, F_SETSIG, SIGKILL)).c_str());
      if (S_ISDIR(st.st_mode)) {
        say("PROBE fcntl fd=%d F_NOTIFY -> %s", fd,
            res(::syscall(SYS_fcntl, fd, F_NOTIFY, DN_CREATE | DN_MULTISHOT)).c_str());
        const int t = ::openat(fd, "attack-notify", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        say("INFO fd=%d notify trigger (create a file) -> %s", fd, res(t).c_str());
        if (t >= 0) {
          ::close(t);
          (void)::unlinkat(fd, "attack-notify", 0);
        }
      } else {
        const int fl = ::fcntl(fd, F_GETFL);
        say("PROBE fcntl fd=%d F_SETFL O_ASYNC -> %s", fd,
            res(::syscall(SYS_fcntl, fd, F_SETFL, (fl < 0 ? 0 : fl) | O_ASYNC)).c_str());
        if (S_ISREG(st.st_mode))
          say("PROBE fcntl fd=%d F_SETLEASE -> %s", fd,
              res(::syscall(SYS_fcntl, fd, F_SETLEASE, F_RDLCK)).c_str());
        if (S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode))
          say("INFO fd=%d O_ASYNC trigger (write) -> %s", fd, res(::write(fd, "x", 1)).c_str());
      }
    }
  }
}

void attack() {
  read_targets();
  // A write to a pipe nobody reads must fail (EPIPE), not end the attack: sigaction is refused,
  // blocking is not.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  (void)::sigprocmask(SIG_BLOCK, &pipe_set, nullptr);
  report = ::open("/attack-report", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (report < 0) return;
  struct stat root {};
  (void)::stat("/", &root);
  proof();
  const std::vector<int> fds = open_fds();
  inventory(fds);
  escapes(fds, root);
  plant();
  limits();
  write_pids(fds);
  signals(fds);
  fcntl_routes(fds);
  (void)::fsync(report);
  // Last: the filter kills the process for it. The report is on disk before.
  if (!victims.empty()) {
    say("PTRACE attach %ld: trying", victims.front());
    (void)::fsync(report);
    const long r = ::syscall(SYS_ptrace, PTRACE_ATTACH, victims.front(), 0, 0);
    say("PROBE ptrace attach %ld -> %s", victims.front(), res(r).c_str());
    if (r == 0) (void)::syscall(SYS_ptrace, PTRACE_DETACH, victims.front(), 0, 0);
  }
  say("END");
  (void)::fsync(report);
  ::close(report);
}

bool is_trigger(const unsigned char* cmd, uint32_t size) {
  auto be32 = [&](int o) {
    return uint32_t(cmd[o]) << 24 | uint32_t(cmd[o + 1]) << 16 | uint32_t(cmd[o + 2]) << 8 |
           cmd[o + 3];
  };
  return size == 12 && be32(6) == kGetRandom && (uint16_t(cmd[10] << 8 | cmd[11])) == kTriggerBytes;
}

}  // namespace

extern "C" TPM_RESULT TPMLIB_Process(unsigned char** resp, uint32_t* resp_size, uint32_t* resp_cap,
                                     unsigned char* cmd, uint32_t cmd_size) {
  if (!done && is_trigger(cmd, cmd_size)) {
    done = true;
    attack();
  }
  return real_process(resp, resp_size, resp_cap, cmd, cmd_size);
}
