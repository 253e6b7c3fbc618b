#pragma once
// Processes we do not parent: pidfds, signals, bounded waits.
#include <sys/types.h>
extern "C" {  // glibc 2.36's header lacks the C++ guard
#include <sys/pidfd.h>
}

#include <chrono>
#include <functional>
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

// Runs body in a forked child and waits for it; the child's exception text comes back as the
// Error "what: <text>". For steps that need another namespace, or must not leave their secrets
// or privileges in this process.
void run_in_child(const std::function<void()>& body, const std::string& what);

}  // namespace vtpm
