#include "emulator/template.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/error.h"
#include "common/io_util.h"
#include "common/process_util.h"
#include "kernel/device_cgroup.h"
#include "state/state_store.h"
#include "tpm/provision.h"
#include "tpm/tpm_engine.h"

namespace vtpm {
namespace {

constexpr char kFork[] = "fork";      // hook -> template, with the child's end of a socket
constexpr char kForked[] = "forked";  // template -> hook, with the child's pidfd
constexpr char kRetire[] = "retire";  // hook -> template: stale, stop serving
constexpr size_t kMaxRequest = 64;
// A hook that connects and sends nothing must not hold the template (nor the template a hook).
constexpr timeval kRequestTimeout{2, 0};
constexpr timeval kForkTimeout{10, 0};

std::string lock_path(const std::string& run_root) { return run_root + "/template.lock"; }

sockaddr_un socket_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw Error("the template's socket path is too long");
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

void set_timeout(int fd, const timeval& tv) {
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
    throw sys_error("setsockopt SO_RCVTIMEO");
}

ucred peer_of(int conn) {
  ucred c{};
  socklen_t len = sizeof c;
  if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &c, &len) != 0)
    throw sys_error("getsockopt SO_PEERCRED");
  return c;
}

// What a template touches once so that its children share it instead of each doing it:
// OpenSSL's provider and algorithm caches, libtpms' first-use paths and the heap they fill.
// The throwaway TPM's seeds stay in the template's freed memory, readable by every child: they
// are nobody's (the template holds no secret).
void warm_up(const std::string& run_root) {
  std::string dir = run_root + "/template-warmup.XXXXXX";
  if (!::mkdtemp(dir.data())) throw sys_error("mkdtemp " + dir);
  try {
    const StateStore store(dir, TpmVersion::V2, /*create=*/true);
    TpmEngine engine(store);
    power_on(engine, /*close_platform=*/true, /*resume=*/false, /*full_self_test=*/true);
  } catch (...) {
    std::filesystem::remove_all(dir);
    throw;
  }
  std::filesystem::remove_all(dir);
}

UniqueFd stop_signalfd() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) throw sys_error("sigprocmask");
  UniqueFd fd(::signalfd(-1, &set, SFD_CLOEXEC));
  if (!fd) throw sys_error("signalfd");
  return fd;
}

// One request on a fresh connection. False: told to retire.
bool serve_request(int listener, size_t& children) {
  UniqueFd conn(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn) return true;  // the hook gave up meanwhile
  try {
    if (peer_of(conn.get()).uid != 0) throw Error("a request from a user other than root");
    set_timeout(conn.get(), kRequestTimeout);
    FdPacket req = receive_packet(conn.get(), kMaxRequest);
    if (req.data == kRetire) {
      spdlog::info("template: retired by a hook (stale)");
      return false;
    }
    // [the child's socket, the hook's cgroup]: the child is born in the hook's cgroup (without
    // one, here: a host without cgroup v2, where hooks do not ask)
    if (req.data != kFork || req.fds.empty() || req.fds.size() > 2)
      throw Error("a malformed request");
    spdlog::default_logger()->flush();
    UniqueFd pidfd;
    const pid_t pid = req.fds.size() == 2 ? fork_into_cgroup(req.fds[1].get(), pidfd) : ::fork();
    if (pid < 0) throw sys_error("fork");
    if (pid == 0) child_from_template(req.fds[0].get());
    ++children;
    if (!pidfd) pidfd = open_pidfd(pid);
    const int fd = pidfd.get();
    send_packet(conn.get(), kForked, {&fd, 1});
    spdlog::debug("template: forked child {}", pid);
  } catch (const std::exception& e) {
    spdlog::warn("template: {}", e.what());
  }
  return true;
}

// Starts a template for the next setups, unless its orphan would be adopted by a subreaper
// (runc, crun, conmon and the containerd shims are: crun's foreground run and conmon wait for
// what they adopted). Exec'd, not forked: it holds nothing of this hook's.
void start_template(const TemplateUse& use) {
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe");
  std::vector<std::string> args = {"vtpm-hook", "--run-root", use.run_root, "--log-level",
                                   use.log_level};
  if (!use.log_file.empty()) args.insert(args.end(), {"--log-file", use.log_file});
  args.insert(args.end(), {"template", "--idle-exit", std::to_string(use.idle_exit.count()),
                           "--started-by-hook"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  spdlog::default_logger()->flush();
  const pid_t mid = ::fork();
  if (mid < 0) throw sys_error("fork");
  if (mid == 0) {
    (void)::setsid();
    const pid_t middle = ::getpid();
    if (::fork() != 0) ::_exit(0);
    detach_stdio_and_fds({});  // nothing of the hook's: the runtime waits for its stdio's EOF
    for (int i = 0; i < 2000 && ::getppid() == middle; ++i) ::usleep(500);  // until adopted
    if (::getppid() != 1) ::_exit(0);
    if (::chdir("/") != 0) ::_exit(127);  // not the bundle's directory (hooks run there)
    sigset_t none;
    sigemptyset(&none);
    (void)::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  (void)::waitpid(mid, nullptr, 0);
}

std::optional<ForkedChild> try_template(TemplateUse& use) {
  const auto cgroup = own_cgroup_v2();
  if (!cgroup) {
    spdlog::debug("no template: it needs cgroup v2");
    return std::nullopt;
  }
  UniqueFd conn(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!conn) throw sys_error("socket");
  const sockaddr_un addr = socket_address(template_socket_path(use.run_root));
  if (::connect(conn.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != ENOENT && errno != ECONNREFUSED) throw sys_error("connect to the template");
    start_template(use);
    spdlog::debug("no template running: one was started for the next setups where it can be");
    return std::nullopt;
  }
  const ucred peer = peer_of(conn.get());
  if (peer.uid != 0) throw Error("the template's socket is not root's");
  const auto started = process_start_time(peer.pid);
  if (!started) throw Error("the template exited");
  if (use.checked != std::pair{peer.pid, *started}) {
    if (const auto why = stale_mapping(peer.pid)) {
      send_packet(conn.get(), kRetire, {});
      spdlog::warn(
          "the template (pid {}) is stale: {}; it is told to exit, and this setup forks its "
          "processes itself",
          peer.pid, *why);
      return std::nullopt;
    }
    if (!same_file("/proc/self/exe", "/proc/" + std::to_string(peer.pid) + "/exe")) {
      spdlog::debug("the template (pid {}) runs another vtpm-hook binary: not used", peer.pid);
      return std::nullopt;
    }
    use.checked = {peer.pid, *started};
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    throw sys_error("socketpair");
  UniqueFd ours(sv[0]), theirs(sv[1]);
  const UniqueFd cgroup_dir = open_cgroup_dir(*cgroup);
  const int fds[] = {theirs.get(), cgroup_dir.get()};
  send_packet(conn.get(), kFork, fds);
  theirs.reset();
  set_timeout(conn.get(), kForkTimeout);
  FdPacket answer = receive_packet(conn.get(), kMaxRequest);
  if (answer.data != kForked || answer.fds.size() != 1) throw Error("the template did not fork");
  const pid_t pid = pidfd_pid(answer.fds[0].get());
  ForkedChild child{EmulatorProcess(pid, std::move(answer.fds[0])), std::move(ours), peer.pid};
  // Before it gets anything: born where the hook's own fork would be (the hook's cgroup).
  check_in_cgroup(pid, *cgroup);
  return child;
}

}  // namespace

std::string template_socket_path(const std::string& run_root) {
  return run_root + "/template.sock";
}

bool run_template(const TemplateOptions& opts) {
  (void)::prctl(PR_SET_NAME, "vtpm-template", 0, 0, 0);  // for ps and tests
  const std::string root = std::filesystem::absolute(opts.run_root);
  if (::chdir("/") != 0) throw sys_error("chdir /");  // it keeps no directory busy
  std::filesystem::create_directories(root);
  const std::string sock = template_socket_path(root);
  const std::string lock = lock_path(root);
  UniqueFd lock_fd(::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock_fd) throw sys_error("open " + lock);
  if (::flock(lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK && opts.quiet_if_taken) return false;
    throw sys_error("another template serves " + sock);
  }
  (void)::unlink(sock.c_str());  // a dead template's
  UniqueFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!listener) throw sys_error("socket");
  const sockaddr_un addr = socket_address(sock);
  const mode_t old_umask = ::umask(0077);  // root's only, from its creation on
  const int bound = ::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int bind_errno = errno;
  (void)::umask(old_umask);
  if (bound != 0) throw sys_error("bind " + sock, bind_errno);
  if (::chmod(sock.c_str(), 0600) != 0) throw sys_error("chmod " + sock);  // (connect needs w)
  struct stat st {};
  if (::stat(sock.c_str(), &st) != 0) throw sys_error("stat " + sock);
  const UniqueFd sig = stop_signalfd();
  warm_up(root);
  if (::listen(listener.get(), 128) != 0) throw sys_error("listen " + sock);
  spdlog::info("template {}: serving {}", ::getpid(), sock);

  size_t children = 0;
  auto last = std::chrono::steady_clock::now();
  for (;;) {
    int timeout = -1;
    if (opts.idle_exit.count() > 0 && children == 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          last + opts.idle_exit - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        spdlog::info("template {}: idle for {} s, exiting", ::getpid(), opts.idle_exit.count());
        break;
      }
      timeout = static_cast<int>(left.count());
    }
    pollfd p[2] = {{listener.get(), POLLIN, 0}, {sig.get(), POLLIN, 0}};
    if (::poll(p, 2, timeout) < 0) {
      if (errno == EINTR) continue;
      throw sys_error("poll");
    }
    if (p[1].revents) {
      signalfd_siginfo si{};
      if (::read(sig.get(), &si, sizeof si) != sizeof si) continue;
      if (si.ssi_signo != SIGCHLD) {
        spdlog::info("template {}: stopping on signal {}", ::getpid(), si.ssi_signo);
        break;
      }
      while (children > 0 && ::waitpid(-1, nullptr, WNOHANG) > 0) --children;
      last = std::chrono::steady_clock::now();
    }
    if (p[0].revents) {
      if (!serve_request(listener.get(), children)) break;
      last = std::chrono::steady_clock::now();
    }
  }
  // Only our own socket: a later template may have bound the path meanwhile.
  struct stat now {};
  if (::stat(sock.c_str(), &now) == 0 && now.st_ino == st.st_ino && now.st_dev == st.st_dev)
    (void)::unlink(sock.c_str());
  return true;
}

std::optional<ForkedChild> fork_from_template(TemplateUse& use) {
  if (use.unusable) return std::nullopt;
  std::optional<ForkedChild> child;
  try {
    child = try_template(use);
  } catch (const std::exception& e) {
    spdlog::warn("the template failed ({}): this setup forks its processes itself", e.what());
  }
  if (!child) use.unusable = true;  // one way for the whole setup
  return child;
}

std::optional<std::string> stale_mapping(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  const auto ticks = process_start_time(pid);
  if (!ticks) throw Error("the template exited");
  const time_t started = boot_time() + static_cast<time_t>(*ticks / ::sysconf(_SC_CLK_TCK));
  std::string maps;
  try {
    maps = read_file(proc + "/maps", 64u << 20);
  } catch (const SysError&) {
    throw Error("cannot read " + proc + "/maps");
  }
  std::set<std::string> seen;
  for (std::string_view line : split(maps, '\n')) {
    // range perms offset dev inode path; the path may hold spaces
    std::string_view fields[5];
    for (auto& f : fields) {
      line.remove_prefix(std::min(line.find_first_not_of(' '), line.size()));
      f = line.substr(0, line.find(' '));
      line.remove_prefix(f.size());
    }
    line.remove_prefix(std::min(line.find_first_not_of(' '), line.size()));
    const std::string range(fields[0]), path(line);
    if (path.empty() || path[0] != '/' || !seen.insert(path).second) continue;
    // shared anonymous memory, memfds, SysV segments: no file on disk to compare
    if (path.starts_with("/dev/zero") || path.starts_with("/memfd:") || path.starts_with("/SYSV"))
      continue;
    constexpr std::string_view kDeleted = " (deleted)";
    if (path.ends_with(kDeleted))
      return path.substr(0, path.size() - kDeleted.size()) + " was replaced";
    // The mapped file itself (maps' device numbers are the lower layer's on overlayfs)
    struct stat mapped {
    }, disk{};
    if (::stat((proc + "/map_files/" + range).c_str(), &mapped) != 0) continue;  // unmapped since
    if (::stat(path.c_str(), &disk) != 0) return path + " is gone";
    if (mapped.st_dev != disk.st_dev || mapped.st_ino != disk.st_ino) return path + " was replaced";
    // (written in place; one second of slack: the start time is known to a tick, boot to 1 s)
    if (disk.st_ctime > started + 1) return path + " was changed after the template started";
  }
  return std::nullopt;
}

}  // namespace vtpm
