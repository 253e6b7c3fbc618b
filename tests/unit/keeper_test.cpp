// The keeper's loop and the cgroup watch it relies on, with a stand-in cgroup tree (files
// under a temp dir, through CgroupPaths) and a socketpair in place of the proxy fd.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/io_util.h"
#include "common/process_util.h"
#include "emulator/emulator_process.h"
#include "emulator/serve_loop.h"
#include "error_matchers.h"
#include "kernel/device_cgroup.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;

class Keeper : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = vtpm::testing::test_dir("keeper");
    paths_.proc = base_ / "proc";
    paths_.cgroup_root = base_ / "cgroup";
    fs::create_directories(paths_.cgroup_root + "/c1");
    fs::create_directories(paths_.cgroup_root + "/devices/c1");
    set_cgroup(::getpid(), "0::/hook\n");
    set_cgroup(kContainer, "0::/c1\n");
    set_populated(true);
  }
  void TearDown() override { fs::remove_all(base_); }

  void set_cgroup(pid_t pid, const std::string& text) {
    fs::create_directories(paths_.proc + "/" + std::to_string(pid));
    std::ofstream(paths_.proc + "/" + std::to_string(pid) + "/cgroup") << text;
  }
  void set_populated(bool yes) {
    std::ofstream(paths_.cgroup_root + "/c1/cgroup.events")
        << "populated " << (yes ? 1 : 0) << "\nfrozen 0\n";
  }

  static constexpr pid_t kContainer = 4000000;
  fs::path base_;
  CgroupPaths paths_;
};

// A TPM2_GetRandom(8) command.
std::vector<uint8_t> get_random() {
  const uint8_t n[] = {0, 8};
  return proto::command(proto::kTpm2StNoSessions, 0x17B, n);
}

// The emulator's stand-in: a child that waits until it is killed (at the latest when this goes).
// close_in_child: an fd of the test's that the emulator would not hold.
struct StandIn {
  pid_t pid;
  UniqueFd pidfd;
  explicit StandIn(int close_in_child = -1) : pid(::fork()) {
    if (pid == 0) {
      if (close_in_child >= 0) ::close(close_in_child);
      ::pause();
      ::_exit(0);
    }
    pidfd = open_pidfd(pid);
  }
  ~StandIn() { kill_and_reap(); }
  void kill_and_reap() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pid = 0;
  }
};

// One command from the kernel's side of the proxy fd.
void send_command(int kernel_side, const std::vector<uint8_t>& cmd) {
  ASSERT_EQ(::write(kernel_side, cmd.data(), cmd.size()), static_cast<ssize_t>(cmd.size()));
}

// The response code of the answer waiting on the kernel's side; 0 for no whole header.
uint32_t answer_rc(int kernel_side) {
  uint8_t buf[4096];
  const ssize_t n = ::read(kernel_side, buf, sizeof buf);
  EXPECT_GE(n, 10);
  return n >= 10 ? proto::response_code(std::span<const uint8_t>(buf, static_cast<size_t>(n))) : 0;
}

// keep_devices' signalfd blocked them in this process (open_stop_signalfd).
void unblock_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

TEST_F(Keeper, NoWatchForAContainerInTheHooksOwnCgroup) {
  set_cgroup(kContainer, "0::/hook\n");
  EXPECT_FALSE(CgroupWatch::open(kContainer, paths_).has_value());
  set_cgroup(kContainer, "0::/\n");
  EXPECT_FALSE(CgroupWatch::open(kContainer, paths_).has_value());
}

TEST_F(Keeper, WatchReadsPopulatedV2AndProcsV1) {
  auto w = CgroupWatch::open(kContainer, paths_);
  ASSERT_TRUE(w.has_value());
  EXPECT_TRUE(w->notifies());
  EXPECT_FALSE(w->empty());
  set_populated(false);
  EXPECT_TRUE(w->empty());
  // v1: the devices hierarchy's cgroup.procs
  set_cgroup(::getpid(), "4:devices:/hook\n");
  set_cgroup(kContainer, "4:devices:/c1\n");
  std::ofstream(paths_.cgroup_root + "/devices/c1/cgroup.procs") << "123\n";
  auto v1 = CgroupWatch::open(kContainer, paths_);
  ASSERT_TRUE(v1.has_value());
  EXPECT_FALSE(v1->notifies());
  EXPECT_FALSE(v1->empty());
  std::ofstream(paths_.cgroup_root + "/devices/c1/cgroup.procs", std::ios::trunc);
  EXPECT_TRUE(v1->empty());
}

// v1's cgroup.procs lists the cgroup's own members only: a process the container moved into a
// child cgroup still counts, through the pids controller's hierarchical pids.current.
TEST_F(Keeper, V1CountsTheContainersChildCgroups) {
  set_cgroup(::getpid(), "5:pids:/hook\n4:devices:/hook\n");
  set_cgroup(kContainer, "5:pids:/c1\n4:devices:/c1\n");
  fs::create_directories(paths_.cgroup_root + "/pids/c1/child");
  std::ofstream(paths_.cgroup_root + "/devices/c1/cgroup.procs", std::ios::trunc);
  std::ofstream(paths_.cgroup_root + "/pids/c1/pids.current") << "1\n";  // in c1/child
  auto v1 = CgroupWatch::open(kContainer, paths_);
  ASSERT_TRUE(v1.has_value());
  EXPECT_FALSE(v1->empty());
  std::ofstream(paths_.cgroup_root + "/pids/c1/pids.current") << "0\n";
  EXPECT_TRUE(v1->empty());
  // A container sharing the hook's pids cgroup: its count says nothing about the container.
  set_cgroup(kContainer, "5:pids:/hook\n4:devices:/c1\n");
  std::ofstream(paths_.cgroup_root + "/pids/c1/pids.current") << "7\n";
  auto shared = CgroupWatch::open(kContainer, paths_);
  ASSERT_TRUE(shared.has_value());
  EXPECT_TRUE(shared->empty());
}

// While the emulator lives the keeper leaves its device alone; once it is gone, every command
// gets TPM_RC_FAILURE; an empty cgroup ends the keeper.
TEST_F(Keeper, FailsTheCommandsOfADeadEmulatorUntilTheCgroupEmpties) {
  auto w = CgroupWatch::open(kContainer, paths_);
  ASSERT_TRUE(w.has_value());
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
  UniqueFd kernel_side(sv[0]), server(sv[1]);
  StandIn emu;
  const UniqueFd sig = open_stop_signalfd();
  std::vector<KeptDevice> devs = {{server.get(), emu.pidfd.get(), TpmVersion::V2}};
  std::thread keeper([&] { keep_devices(devs, sig.get(), *w); });

  const auto cmd = get_random();
  send_command(kernel_side.get(), cmd);
  pollfd p{kernel_side.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 300), 0) << "answered while the emulator was alive";

  emu.kill_and_reap();
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "no answer after the emulator died";
  EXPECT_EQ(answer_rc(kernel_side.get()), proto::kTpm2RcFailure);

  set_populated(false);
  // (a regular file cannot notify: the next command wakes the loop, which then sees it empty)
  send_command(kernel_side.get(), cmd);
  keeper.join();
  unblock_stop_signals();
}

// The emulator hands its device over before it saves its state (a save can take long on a
// loaded host): from then on the keeper answers the device, though the emulator still lives,
// so no command waits for its time-out on a proxy fd nobody reads.
TEST_F(Keeper, AnswersOnceTheEmulatorHandsOverWhileItStillLives) {
  auto w = CgroupWatch::open(kContainer, paths_);
  ASSERT_TRUE(w.has_value());
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
  UniqueFd kernel_side(sv[0]), server(sv[1]);
  auto [handoff_rd, handoff_wr] = make_pipe();
  StandIn emu(handoff_wr.get());  // the test holds the emulator's end
  const UniqueFd sig = open_stop_signalfd();
  std::vector<KeptDevice> devs = {{.server_fd = server.get(),
                                   .emulator_pidfd = emu.pidfd.get(),
                                   .version = TpmVersion::V2,
                                   .handoff_fd = handoff_rd.get()}};
  std::thread keeper([&] { keep_devices(devs, sig.get(), *w); });

  const auto cmd = get_random();
  send_command(kernel_side.get(), cmd);
  pollfd p{kernel_side.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 300), 0) << "answered before the emulator handed over";

  handoff_wr.reset();  // what the emulator does once it stops reading
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "no answer after the handoff";
  EXPECT_EQ(answer_rc(kernel_side.get()), proto::kTpm2RcFailure);
  EXPECT_EQ(::waitpid(emu.pid, nullptr, WNOHANG), 0) << "the emulator was to live on";

  set_populated(false);
  send_command(kernel_side.get(), cmd);
  keeper.join();
  unblock_stop_signals();
}

// An emulator's log reaches the host only through its keeper: each line marked as that
// emulator's, control characters replaced (no forged line breaks or terminal escapes), cut at
// 1 KiB, at most kMaxRelayedLog bytes; a line left open at the pipe's end is not lost.
TEST(KeeperLog, RelaysItsEmulatorsLinesMarkedAndBounded) {
  std::ostringstream out;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(
      "vtpm-keep/c1", std::make_shared<spdlog::sinks::ostream_sink_st>(out));
  logger->set_pattern("%n %l %v");
  spdlog::set_default_logger(logger);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd wr(p[1]);
  KeptDevice d{.log_fd = p[0]};
  const std::string forged = "info: serving\nvtpm-keep/c1 info fake\x1b[2J\rline\nhalf";
  ASSERT_EQ(::write(wr.get(), forged.data(), forged.size()), static_cast<ssize_t>(forged.size()));
  relay_log(d, 1);
  EXPECT_EQ(out.str(),
            "vtpm-keep/c1 info emulator 1: info: serving\n"
            "vtpm-keep/c1 info emulator 1: vtpm-keep/c1 info fake?[2J?line\n");
  const std::string line(999, 'x');
  size_t written = 0;
  while (written < 2 * kMaxRelayedLog) {
    const std::string chunk = line + "\n";
    if (::write(wr.get(), chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size())) {
      relay_log(d, 1);  // the pipe is full: drain it
      continue;
    }
    written += chunk.size();
  }
  wr.reset();
  for (int i = 0; i < 100000 && d.log_fd >= 0; ++i) relay_log(d, 1);  // to the pipe's end
  EXPECT_EQ(d.log_fd, -1) << "the pipe's end closes it";
  EXPECT_LE(out.str().size(), kMaxRelayedLog + 64 * 1024) << "relayed without a bound";
  EXPECT_NE(out.str().find("the rest is dropped"), std::string::npos);
  spdlog::set_default_logger(previous);
}

}  // namespace
}  // namespace vtpm
