#pragma once
// Processes we do not parent: pidfds, signals, bounded waits.
#include <sys/types.h>

#include <chrono>

#include "vtpm_hook/unique_fd.h"

namespace vtpm {

UniqueFd open_pidfd(pid_t pid);  // throws Error when the process does not exist
// True when the process exited within the timeout.
bool wait_pidfd(int pidfd, std::chrono::milliseconds timeout);
// SIGTERM, wait, SIGKILL, wait. Returns false only if it still lives.
bool stop_process(pid_t pid, std::chrono::milliseconds grace);

}  // namespace vtpm
