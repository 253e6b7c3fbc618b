// Teardown (issue 18, hole 7): an emulator counts as gone only once its pidfd says it exited
// (not once it dropped its state lock, which code running inside it can do), a recorded pid
// is signalled only while it still is that emulator (start time), and a managed state dir is
// removed only while its path still names the directory setup opened.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/process_util.h"
#include "emulator/emulator_process.h"
#include "error_matchers.h"
#include "hook/hooks.h"
#include "hook/run_record.h"
#include "state/state_dir.h"
#include "state/state_store.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;

enum class Child { HoldsLock, DroppedLock, IgnoresTerm, Bystander };

// A forked stand-in for an emulator: it takes the state's lock (or not) and then keeps running.
class FakeEmulator {
 public:
  FakeEmulator(Child kind, const std::string& dir = "") {
    int ready[2];
    if (::pipe(ready) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      ::close(ready[0]);
      std::optional<StateStore> lock;
      try {
        if (kind == Child::HoldsLock || kind == Child::DroppedLock)
          lock.emplace(dir, TpmVersion::V2, false);
        // What code running inside a compromised emulator can do: close its lock, live on.
        if (kind == Child::DroppedLock) lock.reset();
        if (kind == Child::IgnoresTerm) (void)::signal(SIGTERM, SIG_IGN);
      } catch (...) {
        ::_exit(2);
      }
      if (::write(ready[1], "r", 1) != 1) ::_exit(3);
      for (;;) ::pause();
    }
    ::close(ready[1]);
    char c = 0;
    const ssize_t r = ::read(ready[0], &c, 1);
    ::close(ready[0]);
    if (r != 1) throw std::runtime_error("the fake emulator failed to start");
  }
  ~FakeEmulator() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  // Its wait status if it has exited (teardown confirmed that before returning), else nullopt.
  std::optional<int> exited() { return reap(WNOHANG); }
  std::optional<int> wait() { return reap(0); }

 private:
  pid_t pid_ = 0;

  std::optional<int> reap(int flags) {
    int status = 0;
    if (pid_ <= 0 || ::waitpid(pid_, &status, flags) != pid_) return std::nullopt;
    pid_ = 0;
    return status;
  }
};

class TeardownTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = vtpm::testing::test_dir("teardown");
    fs::remove_all(base_);
    opts_.state_root = base_ / "state";
    opts_.run_root = base_ / "run";
    fs::create_directories(opts_.run_root);
    fs::create_directories(base_ / "outside");
    state_ = opts_.state_root + "/c1";
    fs::create_directories(state_);
    write(state_ + "/tpm2-00.permall");
    old_logger_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>(
        "test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_)));
  }
  void TearDown() override {
    spdlog::set_default_logger(old_logger_);
    fs::remove_all(base_);
  }

  static void write(const std::string& path) { std::ofstream(path) << "x"; }

  // What setup records for one managed vTPM whose state is state_ (as it is now).
  VtpmRecord record(pid_t emulator, bool with_ids = true) {
    VtpmRecord v;
    v.state_path = state_;
    v.state_root = opts_.state_root;
    v.state_path_managed = true;
    v.emulator_pid = emulator;
    v.container_device = "/dev/tpm0";
    if (with_ids) {
      v.state_dir = open_state_dir(opts_.state_root, state_, false).id;
      if (emulator > 0) v.emulator_start_time = process_start_time(emulator).value_or(0);
    }
    return v;
  }

  void teardown(const VtpmRecord& v) {
    RunRecord rec{"c1", "/b/c1", 1, {v}};
    write_run_record(opts_.run_root, rec);
    run_teardown(R"({"ociVersion": "1.0.2", "id": "c1", "status": "stopped", "bundle": "/b/c1"})",
                 opts_);
    EXPECT_FALSE(fs::exists(opts_.run_root + "/c1.json"));
  }

  // The log lines that contain `needle`.
  std::vector<std::string> lines_with(const std::string& needle) const {
    std::vector<std::string> out;
    std::istringstream in(log_.str());
    for (std::string l; std::getline(in, l);)
      if (l.find(needle) != std::string::npos) out.push_back(l);
    return out;
  }

  fs::path base_;
  HookOptions opts_;
  std::string state_;
  std::ostringstream log_;
  std::shared_ptr<spdlog::logger> old_logger_;
};

TEST_F(TeardownTest, EmulatorThatDroppedItsLockIsStoppedAndConfirmedGone) {
  FakeEmulator emu(Child::DroppedLock, state_);
  teardown(record(emu.pid()));
  const auto status = emu.exited();
  ASSERT_TRUE(status.has_value()) << "teardown believed the lock and left the emulator running";
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGTERM) << *status;
  EXPECT_FALSE(fs::exists(state_));  // managed: gone once its emulator is
}

TEST_F(TeardownTest, EmulatorHoldingItsLockIsStopped) {
  FakeEmulator emu(Child::HoldsLock, state_);
  teardown(record(emu.pid()));
  EXPECT_TRUE(emu.exited().has_value());
  EXPECT_FALSE(fs::exists(state_));
}

// A record written before the start time and the directory's identity were: still torn down,
// the emulator known by the lock it holds (and the state reached beneath the root only).
TEST_F(TeardownTest, OldRecordIsStillTornDown) {
  FakeEmulator emu(Child::HoldsLock, state_);
  teardown(record(emu.pid(), /*with_ids=*/false));
  EXPECT_TRUE(emu.exited().has_value());
  EXPECT_FALSE(fs::exists(state_));
}

// The recorded pid is another process's by now (its start time differs): never signalled.
TEST_F(TeardownTest, ReusedPidIsNotSignalled) {
  FakeEmulator other(Child::Bystander);
  VtpmRecord v = record(other.pid());
  ++v.emulator_start_time;
  teardown(v);
  EXPECT_FALSE(other.exited().has_value())
      << "teardown signalled a process that is not its emulator";
  // and one of an old record that holds no lock of this state is not its emulator either
  fs::create_directories(state_);
  teardown(record(other.pid(), /*with_ids=*/false));
  EXPECT_FALSE(other.exited().has_value());
}

TEST_F(TeardownTest, StateHeldByAnotherProcessIsKept) {
  FakeEmulator squatter(Child::HoldsLock, state_);
  teardown(record(0));  // its emulator has exited; someone else took the lock since
  EXPECT_FALSE(squatter.exited().has_value());
  EXPECT_TRUE(fs::exists(state_ + "/tpm2-00.permall"));
  EXPECT_EQ(lines_with("held by process " + std::to_string(squatter.pid())).size(), 1u);
}

// After setup, the path names another directory (same files, other inode): nothing deleted.
TEST_F(TeardownTest, ReplacedStateDirIsRefused) {
  const VtpmRecord v = record(0);
  fs::rename(state_, base_ / "outside/moved");
  fs::create_directory(state_);
  write(state_ + "/tpm2-00.permall");
  teardown(v);
  EXPECT_TRUE(fs::exists(state_ + "/tpm2-00.permall"));
  EXPECT_TRUE(fs::exists(base_ / "outside/moved/tpm2-00.permall"));
  const auto refused = lines_with("is not the directory setup opened");
  ASSERT_EQ(refused.size(), 1u) << log_.str();
  EXPECT_NE(refused[0].find(state_), std::string::npos) << refused[0];
}

// After setup, the path is a link to a directory outside the root: it is not followed.
TEST_F(TeardownTest, StateDirReplacedByALinkIsRefused) {
  const VtpmRecord v = record(0);
  fs::rename(state_, base_ / "outside/victim");
  fs::create_directory_symlink(base_ / "outside/victim", state_);
  teardown(v);
  EXPECT_TRUE(fs::exists(base_ / "outside/victim/tpm2-00.permall"));
  EXPECT_TRUE(fs::is_symlink(state_));
  EXPECT_EQ(lines_with("symbolic link").size(), 1u) << log_.str();
}

// A compromised emulator may ignore SIGTERM: SIGKILL after the grace, and its exit confirmed.
TEST(ReleaseEmulator, IgnoringSigtermEndsInSigkill) {
  FakeEmulator emu(Child::IgnoresTerm);
  const UniqueFd fd = open_pidfd(emu.pid());
  EXPECT_TRUE(release_emulator(fd.get(), std::chrono::milliseconds(0)));
  const auto status = emu.exited();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << *status;
}

TEST(ProcessStartTime, NamesOneProcess) {
  const auto self = process_start_time(::getpid());
  ASSERT_TRUE(self.has_value());
  EXPECT_GT(*self, 0u);
  EXPECT_EQ(process_start_time(::getpid()), self);  // stable
  FakeEmulator child(Child::Bystander);
  EXPECT_GE(process_start_time(child.pid()).value_or(0), *self);
  const pid_t pid = child.pid();
  ::kill(pid, SIGKILL);
  EXPECT_TRUE(child.wait().has_value());
  EXPECT_FALSE(process_start_time(pid).has_value());  // reaped: no such process (until reused)
}

TEST_F(TeardownTest, StoppedStateWithALivePidIsARestoresSetup) {
  // A poststop state (no pid, or a pid that is gone) tears down: nothing recorded, a warning.
  const std::string bundle = (base_ / "no-bundle").string();
  auto state = [&](const std::string& pid) {
    return R"({"ociVersion": "1.0.2", "id": "c9", "status": "stopped", "bundle": ")" + bundle +
           "\"" + pid + "}";
  };
  EXPECT_NO_THROW(run_hook_by_status(state(""), opts_));
  const pid_t gone = ::fork();
  if (gone == 0) ::_exit(0);
  ::waitpid(gone, nullptr, 0);
  EXPECT_NO_THROW(run_hook_by_status(state(", \"pid\": " + std::to_string(gone)), opts_));
  // runc's restore: stopped, with the restored process's pid: setup, which reads the bundle.
  vtpm::testing::expect_error(
      [&] { run_hook_by_status(state(", \"pid\": " + std::to_string(::getpid())), opts_); },
      {bundle});
}

}  // namespace
}  // namespace vtpm
