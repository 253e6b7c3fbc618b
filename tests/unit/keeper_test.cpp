// The keeper's loop and the cgroup watch it relies on, with a stand-in cgroup tree (files
// under a temp dir, through CgroupPaths) and a socketpair in place of the proxy fd.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

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

// While the emulator lives the keeper leaves its device alone; once it is gone, every command
// gets TPM_RC_FAILURE; an empty cgroup ends the keeper.
TEST_F(Keeper, FailsTheCommandsOfADeadEmulatorUntilTheCgroupEmpties) {
  auto w = CgroupWatch::open(kContainer, paths_);
  ASSERT_TRUE(w.has_value());
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
  UniqueFd kernel_side(sv[0]), server(sv[1]);
  const pid_t emu = ::fork();
  if (emu == 0) {
    ::pause();
    ::_exit(0);
  }
  UniqueFd emu_fd = open_pidfd(emu);
  const UniqueFd sig = open_stop_signalfd();
  std::vector<KeptDevice> devs = {{server.get(), emu_fd.get(), TpmVersion::V2}};
  std::thread keeper([&] { keep_devices(devs, sig.get(), *w); });

  const auto cmd = get_random();
  ASSERT_EQ(::write(kernel_side.get(), cmd.data(), cmd.size()), static_cast<ssize_t>(cmd.size()));
  pollfd p{kernel_side.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 300), 0) << "answered while the emulator was alive";

  ::kill(emu, SIGKILL);
  ::waitpid(emu, nullptr, 0);
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "no answer after the emulator died";
  uint8_t buf[4096];
  const ssize_t n = ::read(kernel_side.get(), buf, sizeof buf);
  ASSERT_GE(n, 10);
  EXPECT_EQ(proto::response_code(std::span<const uint8_t>(buf, static_cast<size_t>(n))),
            proto::kTpm2RcFailure);

  set_populated(false);
  // (a regular file cannot notify: the next command wakes the loop, which then sees it empty)
  ASSERT_EQ(::write(kernel_side.get(), cmd.data(), cmd.size()), static_cast<ssize_t>(cmd.size()));
  keeper.join();
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

// The run record of a setup that never finished (its hook killed, the container failed, no
// teardown to come) goes with the keeper; a finished setup's, or a later setup's, stays.
class OrphanRecord : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = vtpm::testing::test_dir("orphan");
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write("first");
    dir_fd_.reset(::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    struct stat st {};
    ASSERT_EQ(::stat((dir_ / "c1.json").c_str(), &st), 0);
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    rd_.reset(p[0]);
    wr_.reset(p[1]);
    file_ = {dir_fd_.get(), "c1.json", st.st_dev, st.st_ino, rd_.get()};
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& text) {
    std::ofstream(dir_ / "c1.json.tmp") << text;
    fs::rename(dir_ / "c1.json.tmp", dir_ / "c1.json");  // a new inode, as the hook writes
  }

  fs::path dir_;
  UniqueFd dir_fd_, rd_, wr_;
  OrphanFile file_;
};

TEST_F(OrphanRecord, SetupThatNeverFinishedLosesItsRecord) {
  wr_.reset();  // the hook died without its byte
  remove_if_orphaned(file_, std::chrono::seconds(10));
  EXPECT_FALSE(fs::exists(dir_ / "c1.json"));
}

TEST_F(OrphanRecord, FinishedSetupKeepsItsRecordForTeardown) {
  ASSERT_EQ(::write(wr_.get(), "1", 1), 1);
  wr_.reset();
  remove_if_orphaned(file_, std::chrono::seconds(10));
  EXPECT_TRUE(fs::exists(dir_ / "c1.json"));
}

TEST_F(OrphanRecord, ALaterSetupsRecordStays) {
  write("second");  // the same container id set up again meanwhile
  wr_.reset();
  remove_if_orphaned(file_, std::chrono::seconds(10));
  ASSERT_TRUE(fs::exists(dir_ / "c1.json"));
  std::ifstream in(dir_ / "c1.json");
  std::string text;
  in >> text;
  EXPECT_EQ(text, "second");
}

TEST_F(OrphanRecord, WaitsForTheSetupToEnd) {
  std::thread hook([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    (void)!::write(wr_.get(), "1", 1);
  });
  remove_if_orphaned(file_,
                     std::chrono::seconds(10));  // returns only once the setup has said something
  hook.join();
  EXPECT_TRUE(fs::exists(dir_ / "c1.json"));
}

TEST_F(OrphanRecord, ASetupStillSilentKeepsItsRecord) {
  remove_if_orphaned(file_, std::chrono::milliseconds(50));  // the hook neither wrote nor died
  EXPECT_TRUE(fs::exists(dir_ / "c1.json"));
}

}  // namespace
}  // namespace vtpm
