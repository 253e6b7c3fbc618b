#include "emulator/serve_loop.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/io_util.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

// False on EOF before the first byte; throws on EOF in the middle.
bool read_exact(int fd, uint8_t* p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw sys_error("read TPM command");
    if (r == 0) {
      if (got == 0) return false;
      throw Error("TPM command truncated by end of input");
    }
    got += static_cast<size_t>(r);
  }
  return true;
}

void log_signal(int signal_fd) {
  signalfd_siginfo si{};
  if (::read(signal_fd, &si, sizeof si) == sizeof si)
    spdlog::info("got signal {} from pid {}", si.ssi_signo, si.ssi_pid);
}

// The kernel waits for exactly one write() carrying the whole response. EIO means it gave up
// waiting (its command time-out passed, e.g. while we were stopped): the client already has its
// error, the TPM's state is whole, so the answer is dropped and serving goes on.
void answer(int server_fd, std::span<const uint8_t> resp) {
  const ssize_t w = ::write(server_fd, resp.data(), resp.size());
  if (w == static_cast<ssize_t>(resp.size())) return;
  if (w < 0 && errno == EIO) {
    spdlog::warn("the kernel no longer waits for this response (command timed out); dropped");
    return;
  }
  if (w < 0) throw sys_error("write to vtpm proxy");
  throw Error("short write to vtpm proxy (" + std::to_string(w) + " of " +
              std::to_string(resp.size()) + " bytes)");
}

}  // namespace

const char* to_string(StopReason r) {
  switch (r) {
    case StopReason::ContainerExited:
      return "container exited";
    case StopReason::Signal:
      return "signal";
    case StopReason::ClientGone:
      return "device closed";
    case StopReason::EndOfInput:
      return "end of input";
  }
  return "?";
}

StopReason serve_proxy(int server_fd, int container_pidfd, int signal_fd, CommandHandler& handler) {
  std::array<uint8_t, proto::kMaxCommandSize> buf{};
  for (;;) {
    std::array<pollfd, 3> fds{
        {{server_fd, POLLIN, 0}, {signal_fd, POLLIN, 0}, {container_pidfd, POLLIN, 0}}};
    const nfds_t n = container_pidfd >= 0 ? 3 : 2;
    if (::poll(fds.data(), n, -1) < 0) {
      if (errno == EINTR) continue;
      throw sys_error("poll");
    }
    if (fds[1].revents) {
      log_signal(signal_fd);
      return StopReason::Signal;
    }
    if (fds[0].revents & POLLIN) {
      ssize_t r = ::read(server_fd, buf.data(), buf.size());
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r < 0) throw sys_error("read from vtpm proxy");
      if (r == 0) return StopReason::ClientGone;
      answer(server_fd,
             handler.handle(std::span<const uint8_t>(buf.data(), static_cast<size_t>(r))));
      continue;
    }
    if (fds[0].revents & (POLLHUP | POLLERR | POLLNVAL)) return StopReason::ClientGone;
    if (n == 3 && fds[2].revents) return StopReason::ContainerExited;
  }
}

namespace {

constexpr size_t kMaxLogLine = 1024;

void emit_log_line(KeptDevice& d, unsigned index, std::string line) {
  if (d.log_relayed >= kMaxRelayedLog) return;
  if (line.size() > kMaxLogLine) line.resize(kMaxLogLine);
  for (char& c : line)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  d.log_relayed += line.size() + 1;
  const auto level = std::max(spdlog::get_level(), spdlog::level::info);
  if (d.log_relayed < kMaxRelayedLog)
    spdlog::log(level, "emulator {}: {}", index, line);
  else
    spdlog::warn("emulator {}: {} bytes of log relayed; the rest is dropped", index,
                 kMaxRelayedLog);
}

}  // namespace

void relay_log(KeptDevice& d, unsigned index) {
  if (d.log_fd < 0) return;
  char buf[4096];
  const ssize_t r = ::read(d.log_fd, buf, sizeof buf);
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (r <= 0) {  // the emulator has exited (or the pipe broke): what is left, then no more
    if (!d.log_partial.empty()) emit_log_line(d, index, std::exchange(d.log_partial, {}));
    (void)::close(d.log_fd);
    d.log_fd = -1;
    return;
  }
  d.log_partial.append(buf, static_cast<size_t>(r));
  size_t start = 0;
  for (size_t nl; (nl = d.log_partial.find('\n', start)) != std::string::npos; start = nl + 1)
    emit_log_line(d, index, d.log_partial.substr(start, nl - start));
  d.log_partial.erase(0, start);
  if (d.log_partial.size() > kMaxLogLine) emit_log_line(d, index, std::exchange(d.log_partial, {}));
}

void keep_devices(std::span<KeptDevice> devs, int signal_fd, const CgroupWatch& cgroup,
                  std::chrono::milliseconds drain) {
  std::array<uint8_t, proto::kMaxCommandSize> buf{};
  const size_t n = devs.size();
  while (!cgroup.empty()) {
    std::vector<pollfd> fds = {{signal_fd, POLLIN, 0},
                               {cgroup.notifies() ? cgroup.fd() : -1, POLLPRI, 0}};
    for (const auto& d : devs) {
      if (!d.emulator_gone)
        fds.push_back({d.emulator_pidfd, POLLIN, 0});
      else
        fds.push_back({d.device_open ? d.server_fd : -1, POLLIN, 0});
    }
    for (const auto& d : devs) fds.push_back({d.log_fd, POLLIN, 0});
    for (const auto& d : devs) fds.push_back({d.emulator_gone ? -1 : d.handoff_fd, POLLIN, 0});
    // v1 cannot notify: look again every second
    if (::poll(fds.data(), fds.size(), cgroup.notifies() ? -1 : 1000) < 0) {
      if (errno == EINTR) continue;
      throw sys_error("poll");
    }
    if (fds[0].revents) log_signal(signal_fd);  // the numbers stay taken all the same
    for (size_t i = 0; i < n; ++i)
      if (fds[2 + n + i].revents) relay_log(devs[i], static_cast<unsigned>(i));
    for (size_t i = 0; i < n; ++i) {
      auto& d = devs[i];
      if (!d.emulator_gone && fds[2 + 2 * n + i].revents) {
        d.emulator_gone = true;  // it saves its state now: its commands are ours to fail
        spdlog::info("emulator of device {} handed it over; failing its commands", i);
        continue;
      }
      const short rev = fds[i + 2].revents;
      if (!rev) continue;
      if (!d.emulator_gone) {
        d.emulator_gone = true;  // crashed, killed or done: its commands are ours to fail now
        spdlog::info("emulator of device {} is gone; failing its commands", i);
        continue;
      }
      if (!(rev & POLLIN)) {
        d.device_open = false;  // hung up: nothing more will come
        continue;
      }
      const ssize_t r = ::read(d.server_fd, buf.data(), buf.size());
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) {
        d.device_open = false;
        continue;
      }
      // Locality changes must still succeed (an error breaks the host driver); TPM commands
      // fail as a TPM in failure mode fails them.
      CommandHandler failing(
          d.version,
          [v = d.version](std::span<const uint8_t>) {
            return proto::make_response(v, proto::failure_rc(v));
          },
          [](uint8_t) {}, /*accept_vendor=*/true);
      try {
        answer(d.server_fd,
               failing.handle(std::span<const uint8_t>(buf.data(), static_cast<size_t>(r))));
      } catch (const Error& e) {
        spdlog::warn("{}", e.what());  // a failure answer that got lost changes nothing
      }
    }
  }
  // The emulators save their state as the container ends: their last lines, for a bounded time.
  const auto deadline = std::chrono::steady_clock::now() + drain;
  for (;;) {
    std::vector<pollfd> fds;
    for (const auto& d : devs) fds.push_back({d.log_fd, POLLIN, 0});
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (std::all_of(devs.begin(), devs.end(), [](const auto& d) { return d.log_fd < 0; }) ||
        left.count() <= 0 || ::poll(fds.data(), fds.size(), static_cast<int>(left.count())) <= 0)
      break;
    for (size_t i = 0; i < n; ++i)
      if (fds[i].revents) relay_log(devs[i], static_cast<unsigned>(i));
  }
}

UniqueFd open_stop_signalfd() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) throw sys_error("sigprocmask");
  UniqueFd fd(::signalfd(-1, &set, SFD_CLOEXEC));
  if (!fd) throw sys_error("signalfd");
  return fd;
}

StopReason serve_stream(int in_fd, int out_fd, int signal_fd, CommandHandler& handler) {
  std::array<uint8_t, proto::kMaxCommandSize> buf{};
  for (;;) {
    if (signal_fd >= 0) {
      std::array<pollfd, 2> fds{{{in_fd, POLLIN, 0}, {signal_fd, POLLIN, 0}}};
      if (::poll(fds.data(), fds.size(), -1) < 0) {
        if (errno == EINTR) continue;
        throw sys_error("poll");
      }
      if (fds[1].revents) {
        log_signal(signal_fd);
        return StopReason::Signal;
      }
    }
    if (!read_exact(in_fd, buf.data(), proto::kHeaderSize)) return StopReason::EndOfInput;
    const auto hdr = proto::parse_header(std::span<const uint8_t>(buf.data(), proto::kHeaderSize));
    if (hdr->size < proto::kHeaderSize || hdr->size > buf.size()) {
      // The stream cannot be resynchronised after a bad size: answer once and stop.
      write_all(out_fd, handler.handle(std::span<const uint8_t>(buf.data(), proto::kHeaderSize)),
                "TPM response");
      throw Error("TPM command size " + std::to_string(hdr->size) + " is out of range");
    }
    if (!read_exact(in_fd, buf.data() + proto::kHeaderSize, hdr->size - proto::kHeaderSize))
      throw Error("TPM command truncated by end of input");
    write_all(out_fd, handler.handle(std::span<const uint8_t>(buf.data(), hdr->size)),
              "TPM response");
  }
}

}  // namespace vtpm
