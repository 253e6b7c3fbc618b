#include "vtpm_hook/process_util.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vtpm_hook/error.h"

namespace vtpm {

UniqueFd open_pidfd(pid_t pid) {
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
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

bool stop_process(pid_t pid, std::chrono::milliseconds grace) {
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!fd) return errno == ESRCH;  // already gone
  // Signals go through the pidfd, so a recycled pid can never be hit.
  if (::syscall(SYS_pidfd_send_signal, fd.get(), SIGTERM, nullptr, 0) != 0 && errno == ESRCH)
    return true;
  if (wait_pidfd(fd.get(), grace)) return true;
  ::syscall(SYS_pidfd_send_signal, fd.get(), SIGKILL, nullptr, 0);
  return wait_pidfd(fd.get(), std::chrono::seconds(5));
}

}  // namespace vtpm
