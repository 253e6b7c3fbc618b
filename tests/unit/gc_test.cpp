// `vtpm-hook gc`: only default state dirs that no container uses and nobody touched for the
// given time go; a locked one, one named by a run record, the CA, foreign files and links stay.
#include "hook/gc.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/process_util.h"
#include "error_matchers.h"
#include "hook/run_record.h"
#include "state/state_dir.h"
#include "state/state_store.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using vtpm::testing::expect_error;

void set_age(const fs::path& p, std::chrono::seconds age) {
  timespec ts[2];
  ts[0].tv_sec = ts[1].tv_sec = ::time(nullptr) - age.count();
  ts[0].tv_nsec = ts[1].tv_nsec = 0;
  ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << p;
}

class GcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = vtpm::testing::test_dir("gc");
    fs::remove_all(base_);
    opts_.state_root = base_ / "state";
    opts_.run_root = base_ / "run";
    opts_.ca_key = opts_.state_root + "/ca/ek-ca-key.pem";
    opts_.ca_cert = opts_.state_root + "/ca/ek-ca-cert.pem";
    fs::create_directories(opts_.run_root);
    // name -> files in it, all (and the dir) this old
    state("old", {"tpm2-00.permall", "tpm2-00.volatilestate", ".lock"}, 40 * 24h);
    state("old@tpm1", {"tpm-00.permall"}, 40 * 24h);
    state("never-saved", {}, 40 * 24h);  // a TPM that never wrote: the dir's own time
    state("fresh", {"tpm2-00.permall"}, 1h);
    state("ca", {"ek-ca-key.pem", "ek-ca-cert.pem"}, 400 * 24h);
    state("foreign", {"tpm2-00.permall", "notes.txt"}, 40 * 24h);
    state("locked", {"tpm2-00.permall"}, 40 * 24h);
    state("live", {"tpm2-00.permall"}, 40 * 24h);
    state("live@tpm1", {"tpm2-00.permall"}, 40 * 24h);
    state("recorded-elsewhere", {"tpm2-00.permall"}, 40 * 24h);
    state("x@tpmy", {"tpm2-00.permall"}, 40 * 24h);  // not a default name
    fs::create_directories(base_ / "outside");
    state_at(base_ / "outside" / "victim", {"tpm2-00.permall"}, 40 * 24h);
    fs::create_directory_symlink(base_ / "outside" / "victim", root() / "link");
    // container "live" runs; another one keeps its state in a dir that looks like a default
    RunRecord rec{"live", "/b/live", 1, {}};
    rec.vtpms.push_back({});
    rec.vtpms[0].state_path = root() / "live";
    rec.vtpms[0].state_root = root();
    write_run_record(opts_.run_root, rec);
    RunRecord other{"web", "/b/web", 1, {}};
    other.vtpms.push_back({});
    other.vtpms[0].state_path = root() / "recorded-elsewhere";
    other.vtpms[0].state_root = root();
    write_run_record(opts_.run_root, other);
    set_age(root(), 0s);
  }
  void TearDown() override {
    if (holder_ > 0) {
      ::kill(holder_, SIGKILL);
      ::waitpid(holder_, nullptr, 0);
    }
    fs::remove_all(base_);
  }

  fs::path root() const { return opts_.state_root; }

  void state_at(const fs::path& dir, const std::vector<std::string>& files,
                std::chrono::seconds age) {
    fs::create_directories(dir);
    for (const auto& f : files) {
      std::ofstream(dir / f) << "x";
      set_age(dir / f, age);
    }
    set_age(dir, age);
  }
  void state(const std::string& name, const std::vector<std::string>& files,
             std::chrono::seconds age) {
    state_at(root() / name, files, age);
  }

  // Another process holds the state lock of `name`, as a running emulator does.
  void hold_lock(const std::string& name) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    holder_ = ::fork();
    ASSERT_GE(holder_, 0);
    if (holder_ == 0) {
      StateStore s(root() / name, TpmVersion::V2, false);
      (void)!::write(p[1], "L", 1);
      ::pause();
      ::_exit(0);
    }
    ::close(p[1]);
    char c = 0;
    ASSERT_EQ(::read(p[0], &c, 1), 1);
    ::close(p[0]);
  }

  std::vector<std::string> gc(std::chrono::seconds unused_for, bool dry_run = false,
                              unsigned want_failed = 0) {
    std::ostringstream out;
    EXPECT_EQ(run_gc(opts_, {unused_for, dry_run}, out), want_failed);
    std::vector<std::string> lines;
    std::istringstream in(out.str());
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  }

  std::vector<std::string> left() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(root())) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path base_;
  HookOptions opts_;
  pid_t holder_ = -1;
};

TEST_F(GcTest, RemovesOnlyUnusedDefaultState) {
  hold_lock("locked");
  const std::vector<std::string> all = left();
  const std::vector<std::string> gone = {root() / "never-saved", root() / "old",
                                         root() / "old@tpm1"};
  EXPECT_EQ(gc(30 * 24h, /*dry_run=*/true), gone);
  EXPECT_EQ(left(), all);  // a dry run touches nothing
  EXPECT_EQ(gc(30 * 24h), gone);
  EXPECT_EQ(left(), (std::vector<std::string>{"ca", "foreign", "fresh", "link", "live", "live@tpm1",
                                              "locked", "recorded-elsewhere", "x@tpmy"}));
  // what was kept is untouched
  EXPECT_TRUE(fs::exists(root() / "foreign/tpm2-00.permall"));
  EXPECT_TRUE(fs::exists(root() / "ca/ek-ca-key.pem"));
  EXPECT_TRUE(fs::exists(base_ / "outside/victim/tpm2-00.permall"));
  EXPECT_FALSE(fs::exists(root() / "fresh/.lock"));
  EXPECT_EQ(gc(30 * 24h), std::vector<std::string>{});  // nothing more
}

TEST_F(GcTest, ZeroTakesRecentStateButNeverLockedOrLive) {
  hold_lock("locked");
  EXPECT_EQ(gc(0s), (std::vector<std::string>{root() / "fresh", root() / "never-saved",
                                              root() / "old", root() / "old@tpm1"}));
  // the lock holder ends (its container stopped) and its record is gone: now it goes too
  ::kill(holder_, SIGKILL);
  ::waitpid(holder_, nullptr, 0);
  holder_ = -1;
  remove_run_record(opts_.run_root, "live");
  EXPECT_EQ(gc(0s),
            (std::vector<std::string>{root() / "live", root() / "live@tpm1", root() / "locked"}));
  EXPECT_EQ(left(),
            (std::vector<std::string>{"ca", "foreign", "link", "recorded-elsewhere", "x@tpmy"}));
}

TEST_F(GcTest, KubernetesStateIsCollectedToo) {
  state("kubernetes/shop_db-0_postgres", {"tpm2-00.permall"}, 40 * 24h);
  state("kubernetes/shop_web-1_nginx", {"tpm2-00.permall"}, 40 * 24h);
  state("kubernetes/shop_web-2_nginx", {"tpm2-00.permall"}, 1h);
  RunRecord rec{"k8s-id-7", "/b/k", 1, {}};  // a restarted container (new id) uses db-0's
  rec.vtpms.push_back({});
  rec.vtpms[0].state_path = root() / "kubernetes/shop_db-0_postgres";
  rec.vtpms[0].state_root = root();
  write_run_record(opts_.run_root, rec);
  const auto gone = gc(30 * 24h);
  EXPECT_NE(std::find(gone.begin(), gone.end(), root() / "kubernetes/shop_web-1_nginx"),
            gone.end());
  EXPECT_EQ(std::count_if(gone.begin(), gone.end(),
                          [](const std::string& p) { return p.find("kubernetes") != p.npos; }),
            1);
  EXPECT_TRUE(fs::exists(root() / "kubernetes/shop_db-0_postgres/tpm2-00.permall"));
  EXPECT_TRUE(fs::exists(root() / "kubernetes/shop_web-2_nginx/tpm2-00.permall"));
  EXPECT_TRUE(fs::is_directory(root() / "kubernetes"));  // the directory itself stays
}

// Containers whose runtime never ran their teardown: the record of one gone for good goes
// (and then its state, judged like any other); the others keep theirs.
TEST_F(GcTest, RecordOfAContainerGoneForGoodGoes) {
  fs::create_directories(base_ / "cgroup/running");
  auto record = [&](const std::string& id, const std::string& cgroup, long long started,
                    pid_t emulator) {
    state(id, {"tpm2-00.permall"}, 40 * 24h);
    RunRecord rec{id, "/b/" + id, started, {}, (base_ / "cgroup" / cgroup).string()};
    rec.vtpms.push_back({});
    rec.vtpms[0].state_path = root() / id;
    rec.vtpms[0].state_root = root();
    rec.vtpms[0].emulator_pid = emulator;
    write_run_record(opts_.run_root, rec);
  };
  const long long now_ms = ::time(nullptr) * 1000LL;
  record("failed-start", "failed-start", 1000, 4242);  // cgroup gone, no emulator, old
  record("stopped", "running", 1000, 4243);            // its cgroup is still there
  record("just-gone", "just-gone", now_ms, 4244);      // younger than unused_for
  record("serving", "serving", 1000, 0);
  hold_lock("serving");
  auto rec = read_run_record(opts_.run_root, "serving");
  rec->vtpms[0].emulator_pid = holder_;  // its emulator still holds the state
  write_run_record(opts_.run_root, *rec);

  const std::string gone_record = opts_.run_root + "/failed-start.json";
  auto has = [](const std::vector<std::string>& v, const std::string& x) {
    return std::find(v.begin(), v.end(), x) != v.end();
  };
  const auto dry = gc(30 * 24h, /*dry_run=*/true);
  EXPECT_TRUE(has(dry, gone_record));
  EXPECT_TRUE(fs::exists(gone_record));  // a dry run touches nothing
  const auto out = gc(30 * 24h);
  EXPECT_TRUE(has(out, gone_record));
  EXPECT_TRUE(has(out, root() / "failed-start"));
  EXPECT_FALSE(fs::exists(gone_record));
  for (const std::string id : {"stopped", "just-gone", "serving"}) {
    EXPECT_TRUE(fs::exists(opts_.run_root + "/" + id + ".json")) << id;
    EXPECT_TRUE(fs::exists(root() / id / "tpm2-00.permall")) << id;
  }
  EXPECT_TRUE(fs::exists(opts_.run_root + "/live.json"));  // no cgroup recorded: cannot tell
}

// An emulator that closed its lock (code running inside it can) still runs: its record and
// its state stay. Known by its pid and the start time setup recorded, not by the lock.
TEST_F(GcTest, RecordOfAnEmulatorThatDroppedItsLockStays) {
  state("dropped", {"tpm2-00.permall"}, 40 * 24h);
  const pid_t emu = ::fork();
  ASSERT_GE(emu, 0);
  if (emu == 0) {
    for (;;) ::pause();
  }
  holder_ = emu;  // killed and reaped by TearDown
  RunRecord rec{"dropped", "/b/dropped", 1000, {}, (base_ / "cgroup/gone").string()};
  rec.vtpms.push_back({});
  rec.vtpms[0].state_path = root() / "dropped";
  rec.vtpms[0].state_root = root();
  rec.vtpms[0].emulator_pid = emu;
  rec.vtpms[0].emulator_start_time = process_start_time(emu).value_or(0);
  ASSERT_NE(rec.vtpms[0].emulator_start_time, 0u);
  write_run_record(opts_.run_root, rec);
  gc(30 * 24h);
  EXPECT_TRUE(fs::exists(opts_.run_root + "/dropped.json"));
  EXPECT_TRUE(fs::exists(root() / "dropped/tpm2-00.permall"));
  // once it has exited, both go
  ::kill(emu, SIGKILL);
  ::waitpid(emu, nullptr, 0);
  holder_ = -1;
  gc(30 * 24h);
  EXPECT_FALSE(fs::exists(opts_.run_root + "/dropped.json"));
  EXPECT_FALSE(fs::exists(root() / "dropped"));
}

// A record names a state dir by identity too: the same directory under another name (a
// policy root bind-mounted from the state root) is never collected.
TEST_F(GcTest, DirectoryARecordNamesByIdentityStays) {
  RunRecord rec{"elsewhere", "/b/e", 1, {}};
  rec.vtpms.push_back({});
  rec.vtpms[0].state_path = "/srv/tpms/old";  // how that container named it
  rec.vtpms[0].state_root = "/srv/tpms";
  rec.vtpms[0].state_dir = open_state_dir(root(), root() / "old", false).id;
  write_run_record(opts_.run_root, rec);
  EXPECT_EQ(gc(30 * 24h), (std::vector<std::string>{root() / "locked", root() / "never-saved",
                                                    root() / "old@tpm1"}));
  EXPECT_TRUE(fs::exists(root() / "old/tpm2-00.permall"));
}

TEST_F(GcTest, MissingStateRootIsNothingToDo) {
  fs::remove_all(root());
  EXPECT_EQ(gc(0s), std::vector<std::string>{});
}

TEST_F(GcTest, Durations) {
  EXPECT_EQ(parse_duration("0"), 0s);
  EXPECT_EQ(parse_duration("45s"), 45s);
  EXPECT_EQ(parse_duration("90m"), 90min);
  EXPECT_EQ(parse_duration("12h"), 12h);
  EXPECT_EQ(parse_duration("30d"), 30 * 24h);
  EXPECT_EQ(parse_duration("2w"), 14 * 24h);
  for (const char* bad : {"", "d", "30", "-1d", "1.5h", "3y", "30 d", "99999999999w"})
    expect_error([&] { parse_duration(bad); }, {"duration"});
}

}  // namespace
}  // namespace vtpm
