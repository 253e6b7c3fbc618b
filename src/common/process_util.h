#pragma once
// Processes we do not parent: pidfds, signals, bounded waits.
#include <sys/types.h>
extern "C" {  // glibc 2.36's header lacks the C++ guard
#include <sys/pidfd.h>
}

#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <string>

#include "common/unique_fd.h"

namespace vtpm {

UniqueFd open_pidfd(pid_t pid);  // throws Error when the process does not exist
// True when the process exited within the timeout.
bool wait_pidfd(int pidfd, std::chrono::milliseconds timeout);
// SIGTERM, wait, SIGKILL, wait. Returns false only if it still lives.
bool stop_process(pid_t pid, std::chrono::milliseconds grace);
// Same, for a process whose pidfd we hold.
bool stop_pidfd(int pidfd, std::chrono::milliseconds grace);

// When the process started, in clock ticks after boot (/proc/PID/stat, field 22): with the pid,
// it names one process, where a pid alone may be another's by now. nullopt when there is no
// such process. Throws Error on an unreadable entry.
std::optional<unsigned long long> process_start_time(pid_t pid);

// fork() into the cgroup v2 directory cgroup_fd (clone3 with CLONE_INTO_CGROUP), with a pidfd
// (CLONE_PIDFD, close-on-exec). In a single-threaded process only: no atfork handler runs.
// Returns 0 in the child. Throws Error.
pid_t fork_into_cgroup(int cgroup_fd, UniqueFd& pidfd);
// The pid a pidfd refers to (its fdinfo), in this process's pid namespace. Throws Error.
pid_t pidfd_pid(int pidfd);
// When the system booted, in seconds since the epoch (/proc/stat btime). Throws Error.
time_t boot_time();
// Runs body in a forked child and waits for it; the child's exception text comes back as the
// Error "what: <text>". For steps that need another namespace, or must not leave their secrets
// or privileges in this process.
void run_in_child(const std::function<void()>& body, const std::string& what);

// For a child that outlives the hook: stdin/stdout/stderr on /dev/null and every other fd but
// `keep` closed (runtimes wait for EOF on a hook's stdout/stderr: no copy may stay open).
void detach_stdio_and_fds(const std::set<int>& keep);

}  // namespace vtpm
