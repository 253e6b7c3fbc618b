#pragma once
// The emulator's loops: one over the kernel proxy fd, one over a byte stream.
#include <chrono>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include "common/tpm_version.h"
#include "common/unique_fd.h"
#include "kernel/device_cgroup.h"
#include "tpm/command_handler.h"

namespace vtpm {

enum class StopReason { ContainerExited, Signal, ClientGone, EndOfInput };
const char* to_string(StopReason r);

// Proxy fd: one read() is one command, one write() is one response.
// Returns when the container's init exits (pidfd readable), on SIGTERM/SIGINT/SIGHUP
// (signal_fd readable), or when the device side hangs up.
StopReason serve_proxy(int server_fd, int container_pidfd, int signal_fd, CommandHandler& handler);

// One proxy device as the keeper sees it.
struct KeptDevice {
  int server_fd = -1;       // a copy: the device and its number live while it is open
  int emulator_pidfd = -1;  // readable once the emulator has exited
  TpmVersion version = TpmVersion::V2;
  int log_fd = -1;  // read end of its emulator's log pipe, relayed to the keeper's log; -1: none
  // Read end of its emulator's handoff pipe: hangs up once the emulator no longer reads the
  // device (it then saves its state; see EmulatorOptions::handoff_pipe); -1: none
  int handoff_fd = -1;
  bool emulator_gone = false;
  bool device_open = true;
  std::string log_partial{};  // a line not ended yet
  size_t log_relayed = 0;     // bytes relayed so far (bounded: kMaxRelayedLog)
};

// What the keeper relays of one emulator's log: an emulator that runs an attacker's code can fill
// its pipe, not the host's disk.
inline constexpr size_t kMaxRelayedLog = size_t{1} << 20;

// The keeper's loop: holds every server fd, so that the kernel cannot give a device number to
// another TPM while a process of the container can still open its node, until the container's
// cgroup is empty. Once a device's emulator is gone (it handed the device over, or it exited,
// crashed or was killed), answers that device's commands with failures. An emulator that runs
// an attacker's code and hands over early only has its own TPM's commands failed. Signals are
// logged and ignored. Relays the emulators' log lines meanwhile (see relay_log), and for at most
// `drain` after the cgroup is empty.
void keep_devices(std::span<KeptDevice> devs, int signal_fd, const CgroupWatch& cgroup,
                  std::chrono::milliseconds drain = std::chrono::seconds(2));

// One read from d.log_fd: each whole line goes to this process's log as "emulator N: line", with
// control characters replaced, lines cut at 1 KiB, at most kMaxRelayedLog bytes in all. Closes
// the fd at its end. The emulator's lines cannot pass for the keeper's or another emulator's.
void relay_log(KeptDevice& d, unsigned index);

// Stream (stdin/stdout): commands are framed by their header's size field. Stops at end of
// input or, between commands, when signal_fd (if >= 0) is readable.
StopReason serve_stream(int in_fd, int out_fd, int signal_fd, CommandHandler& handler);

// Blocks SIGTERM, SIGINT and SIGHUP and returns a signalfd for them.
UniqueFd open_stop_signalfd();

}  // namespace vtpm
