#pragma once
// The emulator's loops: one over the kernel proxy fd, one over a byte stream.
#include <functional>
#include <optional>

#include "vtpm_hook/command_handler.h"
#include "vtpm_hook/unique_fd.h"

namespace vtpm {

enum class StopReason { ContainerExited, Signal, ClientGone, EndOfInput };
const char* to_string(StopReason r);

// Proxy fd: one read() is one command, one write() is one response.
// Returns when the container's init exits (pidfd readable), on SIGTERM/SIGINT/SIGHUP
// (signal_fd readable), or when the device side hangs up.
StopReason serve_proxy(int server_fd, int container_pidfd, int signal_fd, CommandHandler& handler);

// Stream (stdin/stdout): commands are framed by their header's size field. Stops at end of
// input or, between commands, when signal_fd (if >= 0) is readable.
StopReason serve_stream(int in_fd, int out_fd, int signal_fd, CommandHandler& handler);

// Blocks SIGTERM, SIGINT and SIGHUP and returns a signalfd for them.
UniqueFd open_stop_signalfd();

}  // namespace vtpm
