#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/process_util.h"
#include "common/unique_fd.h"
#include "emulator/serve_loop.h"
#include "tpm/command_handler.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

using Bytes = std::vector<uint8_t>;

// A TPM 2 command with `params` parameter bytes, all 0xAB.
Bytes command(uint32_t ordinal, size_t params = 0) {
  Bytes c;
  proto::put_u16(c, proto::kTpm2StNoSessions);
  proto::put_u32(c, static_cast<uint32_t>(proto::kHeaderSize + params));
  proto::put_u32(c, ordinal);
  c.insert(c.end(), params, 0xab);
  return c;
}

// The fake TPM's answer: success plus the ordinal and length it saw.
Bytes answer_for(uint32_t ordinal, size_t cmd_len) {
  Bytes r;
  proto::put_u16(r, proto::kTpm2StNoSessions);
  proto::put_u32(r, 18);
  proto::put_u32(r, 0);
  proto::put_u32(r, ordinal);
  proto::put_u32(r, static_cast<uint32_t>(cmd_len));
  return r;
}

struct FakeTpm {
  std::vector<Bytes> seen;
  std::vector<uint8_t> localities;
  CommandHandler handler(bool accept_vendor = false) {
    return CommandHandler(
        TpmVersion::V2,
        [this](std::span<const uint8_t> c) {
          seen.emplace_back(c.begin(), c.end());
          return answer_for(proto::get_u32(c, 6), c.size());
        },
        [this](uint8_t l) { localities.push_back(l); }, accept_vendor);
  }
};

struct Pipe {
  UniqueFd r, w;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    r.reset(fds[0]);
    w.reset(fds[1]);
  }
};

void write_bytes(int fd, const Bytes& b) {
  ASSERT_EQ(::write(fd, b.data(), b.size()), static_cast<ssize_t>(b.size()));
}

Bytes read_all(int fd) {
  Bytes out;
  uint8_t buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  return out;
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Runs serve_stream over `input` (then EOF); returns the output and the stop reason or error.
struct StreamResult {
  Bytes output;
  std::optional<StopReason> reason;
  std::string error;
};

StreamResult run_stream(const Bytes& input, FakeTpm& tpm, int signal_fd = -1) {
  Pipe in, out;
  write_bytes(in.w.get(), input);
  in.w.reset();
  StreamResult res;
  auto h = tpm.handler();
  try {
    res.reason = serve_stream(in.r.get(), out.w.get(), signal_fd, h);
  } catch (const Error& e) {
    res.error = e.what();
  }
  out.w.reset();
  res.output = read_all(out.r.get());
  return res;
}

TEST(ServeStream, TwoCommandsInOneWriteAreAnsweredInOrder) {
  FakeTpm tpm;
  const Bytes a = command(0x17b, 2), b = command(0x144, 2);
  const auto res = run_stream(concat({a, b}), tpm);
  ASSERT_TRUE(res.reason.has_value()) << res.error;
  EXPECT_EQ(*res.reason, StopReason::EndOfInput);
  EXPECT_EQ(res.output, concat({answer_for(0x17b, 12), answer_for(0x144, 12)}));
  ASSERT_EQ(tpm.seen.size(), 2u);
  EXPECT_EQ(tpm.seen[0], a);
  EXPECT_EQ(tpm.seen[1], b);
}

TEST(ServeStream, CommandsOfDifferentSizesIncludingMaximum) {
  FakeTpm tpm;
  const Bytes a = command(1), b = command(2, proto::kMaxCommandSize - proto::kHeaderSize),
              c = command(3, 1);
  const auto res = run_stream(concat({a, b, c}), tpm);
  ASSERT_TRUE(res.reason.has_value()) << res.error;
  EXPECT_EQ(*res.reason, StopReason::EndOfInput);
  EXPECT_EQ(res.output,
            concat({answer_for(1, 10), answer_for(2, proto::kMaxCommandSize), answer_for(3, 11)}));
  ASSERT_EQ(tpm.seen.size(), 3u);
  EXPECT_EQ(tpm.seen[1], b);
}

TEST(ServeStream, CommandSplitAcrossWritesIsReassembled) {
  FakeTpm tpm;
  Pipe in, out;
  const Bytes a = command(0x17b, 30);
  auto h = tpm.handler();
  // Feed it in three pieces from a child so serve_stream sees short reads.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    in.r.reset();
    for (auto [off, len] : {std::pair<size_t, size_t>{0, 3}, {3, 10}, {13, 27}}) {
      if (::write(in.w.get(), a.data() + off, len) != static_cast<ssize_t>(len)) ::_exit(1);
      ::usleep(20000);
    }
    ::_exit(0);
  }
  in.w.reset();
  const auto reason = serve_stream(in.r.get(), out.w.get(), -1, h);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(reason, StopReason::EndOfInput);
  out.w.reset();
  EXPECT_EQ(read_all(out.r.get()), answer_for(0x17b, 40));
  ASSERT_EQ(tpm.seen.size(), 1u);
  EXPECT_EQ(tpm.seen[0], a);
}

TEST(ServeStream, ImmediateEofIsEndOfInput) {
  FakeTpm tpm;
  const auto res = run_stream({}, tpm);
  ASSERT_TRUE(res.reason.has_value()) << res.error;
  EXPECT_EQ(*res.reason, StopReason::EndOfInput);
  EXPECT_TRUE(res.output.empty());
  EXPECT_TRUE(tpm.seen.empty());
}

TEST(ServeStream, TruncatedCommandThrows) {
  FakeTpm tpm;
  Bytes a = command(0x17b, 2);
  a.pop_back();
  const auto res = run_stream(concat({command(1), a}), tpm);
  EXPECT_FALSE(res.reason.has_value());
  EXPECT_NE(res.error.find("truncated"), std::string::npos) << res.error;
  // The complete first command was still answered.
  EXPECT_EQ(res.output, answer_for(1, 10));
  EXPECT_EQ(tpm.seen.size(), 1u);
}

TEST(ServeStream, TruncatedHeaderThrows) {
  FakeTpm tpm;
  const auto res = run_stream(Bytes{0x80, 0x01, 0x00, 0x00}, tpm);
  EXPECT_FALSE(res.reason.has_value());
  EXPECT_NE(res.error.find("truncated"), std::string::npos) << res.error;
  EXPECT_TRUE(res.output.empty());
}

TEST(ServeStream, OversizedCommandGetsAnErrorResponseThenThrows) {
  FakeTpm tpm;
  Bytes big;
  proto::put_u16(big, proto::kTpm2StNoSessions);
  proto::put_u32(big, 4097);
  proto::put_u32(big, 0x17b);
  big.resize(4097, 0);
  const auto res = run_stream(concat({big, command(2)}), tpm);
  EXPECT_FALSE(res.reason.has_value());
  EXPECT_NE(res.error.find("4097"), std::string::npos) << res.error;
  EXPECT_EQ(res.output, proto::make_response(TpmVersion::V2, proto::kTpm2RcCommandSize));
  EXPECT_TRUE(tpm.seen.empty());  // neither the big one nor the one after it
}

TEST(ServeStream, UndersizedSizeFieldGetsAnErrorResponseThenThrows) {
  FakeTpm tpm;
  Bytes c = command(0x17b);
  c[5] = 4;  // size 4 < header
  const auto res = run_stream(c, tpm);
  EXPECT_FALSE(res.reason.has_value());
  EXPECT_NE(res.error.find("out of range"), std::string::npos) << res.error;
  EXPECT_EQ(res.output, proto::make_response(TpmVersion::V2, proto::kTpm2RcCommandSize));
  EXPECT_TRUE(tpm.seen.empty());
}

TEST(ServeStream, StreamClientCannotSetLocality) {
  FakeTpm tpm;
  Bytes loc;
  proto::put_u16(loc, proto::kTpm2StSessions);
  proto::put_u32(loc, 11);
  proto::put_u32(loc, proto::kVendorSetLocality);
  loc.push_back(4);
  const auto res = run_stream(loc, tpm);  // handler built with accept_vendor=false
  EXPECT_EQ(res.output, answer_for(proto::kVendorSetLocality, 11));
  EXPECT_TRUE(tpm.localities.empty());
}

// SIGUSR1 blocked and delivered through a signalfd; the old mask is restored afterwards.
class SignalFd {
 public:
  SignalFd() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    ::sigprocmask(SIG_BLOCK, &set, &old_);
    fd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  }
  ~SignalFd() {
    signalfd_siginfo si;
    while (::read(fd_.get(), &si, sizeof si) == sizeof si) {
    }
    ::sigprocmask(SIG_SETMASK, &old_, nullptr);
  }
  int get() const { return fd_.get(); }

 private:
  sigset_t old_;
  UniqueFd fd_;
};

TEST(ServeStream, PendingSignalStopsBeforeTheNextCommand) {
  SignalFd sfd;
  ASSERT_GE(sfd.get(), 0);
  ASSERT_EQ(::kill(::getpid(), SIGUSR1), 0);
  FakeTpm tpm;
  const auto res = run_stream(command(1), tpm, sfd.get());
  ASSERT_TRUE(res.reason.has_value()) << res.error;
  EXPECT_EQ(*res.reason, StopReason::Signal);
  EXPECT_TRUE(tpm.seen.empty());
  EXPECT_TRUE(res.output.empty());
}

TEST(ServeStream, QuietSignalFdDoesNotDisturbServing) {
  SignalFd sfd;
  ASSERT_GE(sfd.get(), 0);
  FakeTpm tpm;
  const auto res = run_stream(concat({command(1), command(2)}), tpm, sfd.get());
  ASSERT_TRUE(res.reason.has_value()) << res.error;
  EXPECT_EQ(*res.reason, StopReason::EndOfInput);
  EXPECT_EQ(res.output, concat({answer_for(1, 10), answer_for(2, 10)}));
}

// ---- serve_proxy over a SOCK_SEQPACKET pair (one read is one command, like the proxy) ----

struct SeqPair {
  UniqueFd server, client;
  SeqPair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0)
      throw std::runtime_error("socketpair");
    server.reset(fds[0]);
    client.reset(fds[1]);
  }
};

Bytes read_packet(int fd) {
  Bytes b(8192);
  const ssize_t n = ::read(fd, b.data(), b.size());
  b.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return b;
}

TEST(ServeProxy, OneCommandPerPacketThenClientGone) {
  SeqPair sp;
  FakeTpm tpm;
  auto h = tpm.handler(/*accept_vendor=*/true);
  Bytes loc;
  proto::put_u16(loc, proto::kTpm2StSessions);
  proto::put_u32(loc, 11);
  proto::put_u32(loc, proto::kVendorSetLocality);
  loc.push_back(2);
  write_bytes(sp.client.get(), loc);
  write_bytes(sp.client.get(), command(0x17b, 2));
  write_bytes(sp.client.get(), command(0x144));
  ASSERT_EQ(::shutdown(sp.client.get(), SHUT_WR), 0);
  EXPECT_EQ(serve_proxy(sp.server.get(), -1, -1, h), StopReason::ClientGone);
  EXPECT_EQ(read_packet(sp.client.get()), proto::make_response(TpmVersion::V2, 0));
  EXPECT_EQ(read_packet(sp.client.get()), answer_for(0x17b, 12));
  EXPECT_EQ(read_packet(sp.client.get()), answer_for(0x144, 10));
  EXPECT_EQ(tpm.localities, (std::vector<uint8_t>{2}));
  EXPECT_EQ(tpm.seen.size(), 2u);
}

TEST(ServeProxy, ContainerExitStopsTheLoop) {
  SeqPair sp;
  FakeTpm tpm;
  auto h = tpm.handler(true);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  UniqueFd pidfd = open_pidfd(child);
  EXPECT_EQ(serve_proxy(sp.server.get(), pidfd.get(), -1, h), StopReason::ContainerExited);
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(tpm.seen.empty());
}

TEST(ServeProxy, SignalStopsTheLoop) {
  SignalFd sfd;
  ASSERT_EQ(::kill(::getpid(), SIGUSR1), 0);
  SeqPair sp;
  FakeTpm tpm;
  auto h = tpm.handler(true);
  EXPECT_EQ(serve_proxy(sp.server.get(), -1, sfd.get(), h), StopReason::Signal);
}

TEST(StopReason, Names) {
  EXPECT_STREQ(to_string(StopReason::EndOfInput), "end of input");
  EXPECT_STREQ(to_string(StopReason::Signal), "signal");
  EXPECT_STREQ(to_string(StopReason::ContainerExited), "container exited");
  EXPECT_STREQ(to_string(StopReason::ClientGone), "device closed");
}

}  // namespace
}  // namespace vtpm
