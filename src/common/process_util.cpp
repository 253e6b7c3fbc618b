#include "common/process_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/io_util.h"

namespace vtpm {

UniqueFd open_pidfd(pid_t pid) {
  UniqueFd fd(::pidfd_open(pid, 0));
  if (!fd) throw sys_error("pidfd_open(" + std::to_string(pid) + ")");
  return fd;
}

bool wait_pidfd(int pidfd, std::chrono::milliseconds timeout) {
  pollfd p{pidfd, POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    int r = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, left.count())));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) throw sys_error("poll pidfd");
  }
}

bool stop_pidfd(int pidfd, std::chrono::milliseconds grace) {
  // Signals go through the pidfd, so a recycled pid can never be hit.
  if (::pidfd_send_signal(pidfd, SIGTERM, nullptr, 0) != 0 && errno == ESRCH) return true;
  if (wait_pidfd(pidfd, grace)) return true;
  (void)::pidfd_send_signal(pidfd, SIGKILL, nullptr, 0);  // ESRCH: it exited meanwhile
  return wait_pidfd(pidfd, std::chrono::seconds(5));
}

bool stop_process(pid_t pid, std::chrono::milliseconds grace) {
  UniqueFd fd(::pidfd_open(pid, 0));
  if (!fd) return errno == ESRCH;  // already gone
  return stop_pidfd(fd.get(), grace);
}

std::optional<unsigned long long> process_start_time(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT || errno == ESRCH) return std::nullopt;
    throw sys_error("open " + path);
  }
  char buf[1024];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf - 1)) < 0 && errno == EINTR) {
  }
  if (n < 0) {
    if (errno == ESRCH) return std::nullopt;  // it exited after the open
    throw sys_error("read " + path);
  }
  const std::string text(buf, static_cast<size_t>(n));
  // The name (field 2) is in parentheses and may hold anything, ')' and spaces included.
  const auto close = text.rfind(')');
  if (close == std::string::npos) throw Error(path + " has no command name");
  // Fields 3.. follow "comm) ": the start time is the 20th of them.
  size_t pos = close + 1;
  for (int field = 3; field <= 22; ++field) {
    pos = text.find_first_not_of(' ', pos);
    if (pos == std::string::npos) break;
    if (field == 22) {
      const char* p = text.c_str() + pos;
      char* end = nullptr;
      errno = 0;
      const unsigned long long t = std::strtoull(p, &end, 10);
      if (end != p && errno == 0) return t;
      break;
    }
    pos = text.find(' ', pos);
  }
  throw Error(path + " has no start time");
}

void run_in_child(const std::function<void()>& body, const std::string& what) {
  auto [rd, wr] = make_pipe();
  const pid_t pid = ::fork();
  if (pid < 0) throw sys_error("fork");
  if (pid == 0) {
    rd.reset();
    try {
      body();
    } catch (const std::exception& e) {
      // the parent reports it; nothing more can be done if this write fails
      [[maybe_unused]] auto n = ::write(wr.get(), e.what(), std::strlen(e.what()));
      ::_exit(1);
    }
    ::_exit(0);
  }
  wr.reset();
  std::string msg;
  char buf[512];
  for (ssize_t r; (r = ::read(rd.get(), buf, sizeof buf)) != 0;) {
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    msg.append(buf, static_cast<size_t>(r));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw Error(what + ": " + (msg.empty() ? "helper process failed" : msg));
}

pid_t fork_into_cgroup(int cgroup_fd, UniqueFd& pidfd) {
  int fd = -1;
  clone_args args{};
  args.flags = CLONE_INTO_CGROUP | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uintptr_t>(&fd);
  args.exit_signal = SIGCHLD;
  args.cgroup = static_cast<uint64_t>(cgroup_fd);
  const long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0) throw sys_error("clone3 into a cgroup");
  if (pid > 0) pidfd = UniqueFd(fd);
  return static_cast<pid_t>(pid);
}

pid_t pidfd_pid(int pidfd) {
  std::string text;
  try {
    text = read_file("/proc/self/fdinfo/" + std::to_string(pidfd));
  } catch (const SysError&) {
  }
  for (const std::string_view line : split(text, '\n'))
    if (line.starts_with("Pid:")) {
      const long pid = std::strtol(std::string(line.substr(4)).c_str(), nullptr, 10);
      if (pid <= 0) throw Error("the process of a pidfd has exited");
      return static_cast<pid_t>(pid);
    }
  throw Error("fd " + std::to_string(pidfd) + " is not a pidfd");
}

time_t boot_time() {
  for (const std::string_view line : split(read_file("/proc/stat"), '\n'))
    if (line.starts_with("btime "))
      return static_cast<time_t>(std::strtoll(std::string(line.substr(6)).c_str(), nullptr, 10));
  throw Error("/proc/stat has no btime");
}

void detach_stdio_and_fds(const std::set<int>& keep) {
  const int null_fd = ::open("/dev/null", O_RDWR);
  if (null_fd < 0) ::_exit(127);  // stdio would stay attached and hang the runtime
  for (int fd = 0; fd <= 2; ++fd) (void)::dup2(null_fd, fd);  // valid fds: cannot fail
  if (null_fd > 2) (void)::close(null_fd);
  std::vector<int> to_close;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      const int fd = std::atoi(e->d_name);
      if (fd > 2 && fd != ::dirfd(d) && !keep.count(fd)) to_close.push_back(fd);
    }
    (void)::closedir(d);  // read-only directory stream
  }
  for (int fd : to_close) ::close(fd);
}

}  // namespace vtpm
