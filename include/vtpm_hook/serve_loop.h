#pragma once
// The emulator's loops: one over the kernel proxy fd, one over a byte stream.
#include <functional>
#include <optional>

#include "vtpm_hook/command_handler.h"
#include "vtpm_hook/device_cgroup.h"
#include "vtpm_hook/unique_fd.h"

namespace vtpm {

// Abort: SIGINT, the hook undoing a failed setup (save and exit, nothing to keep).
enum class StopReason { ContainerExited, Signal, Abort, ClientGone, EndOfInput };
const char* to_string(StopReason r);

// Proxy fd: one read() is one command, one write() is one response.
// Returns when the container's init exits (pidfd readable), on SIGTERM/SIGINT/SIGHUP
// (signal_fd readable), or when the device side hangs up.
StopReason serve_proxy(int server_fd, int container_pidfd, int signal_fd, CommandHandler& handler);

// Once the TPM is saved and its state released: keeps server_fd open, so that the kernel cannot
// give this device number to another TPM while a process of the container can still open it,
// answering whatever comes through the handler (which fails every TPM command), until the
// container's cgroup is empty. Signals are logged and ignored.
void linger(int server_fd, int signal_fd, const CgroupWatch& cgroup, CommandHandler& handler);

// Stream (stdin/stdout): commands are framed by their header's size field. Stops at end of
// input or, between commands, when signal_fd (if >= 0) is readable.
StopReason serve_stream(int in_fd, int out_fd, int signal_fd, CommandHandler& handler);

// Blocks SIGTERM, SIGINT and SIGHUP and returns a signalfd for them.
UniqueFd open_stop_signalfd();

}  // namespace vtpm
