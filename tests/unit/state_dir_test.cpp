// State directories beneath an allowed root: nothing inside the root (a symlink, a mount point,
// a racing setup) sends the hook elsewhere; and key files that cannot hang or fool the hook.
#include "state/state_dir.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "error_matchers.h"
#include "hook/host_inputs.h"
#include "state/state_key.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;
using vtpm::testing::expect_error;

class StateDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = vtpm::testing::test_dir("statedir");
    root_ = base_ / "root";
    victim_ = base_ / "victim";
    fs::create_directories(root_);
    fs::create_directories(victim_);
    std::ofstream(victim_ / "precious") << "keep me";
  }
  void TearDown() override { fs::remove_all(base_); }

  void expect_victim_intact(long files = 1) {
    EXPECT_EQ(std::distance(fs::directory_iterator(victim_), fs::directory_iterator{}), files);
    std::ifstream in(victim_ / "precious");
    std::string s;
    std::getline(in, s);
    EXPECT_EQ(s, "keep me");
  }

  fs::path base_, root_, victim_;
};

TEST_F(StateDirTest, CreatesMissingDirectoriesOnce) {
  const std::string path = root_ / "a/b/state";
  auto d = open_state_dir(root_, path, true);
  EXPECT_TRUE(d.created);
  EXPECT_TRUE(d.fd);
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_EQ(fs::status(root_ / "a").permissions() & fs::perms::all, static_cast<fs::perms>(0755));
  // a second setup (or the loser of a race) finds it made: not its own, never to be removed
  EXPECT_FALSE(open_state_dir(root_, path, true).created);
}

TEST_F(StateDirTest, MissingWithoutCreateIsAnError) {
  expect_error([&] { open_state_dir(root_, root_ / "nope", false); }, {"nope"});
  EXPECT_FALSE(fs::exists(root_ / "nope"));
}

TEST_F(StateDirTest, SymlinkAnywhereBelowTheRootIsRefused) {
  fs::create_directory_symlink(victim_, root_ / "link");
  expect_error([&] { open_state_dir(root_, root_ / "link", true); }, {"symbolic link"});
  expect_error([&] { open_state_dir(root_, root_ / "link/sub", true); }, {"symbolic link"});
  fs::create_directories(root_ / "d");
  fs::create_directory_symlink("../../victim", root_ / "d/up");
  expect_error([&] { open_state_dir(root_, root_ / "d/up", true); }, {"symbolic link"});
  expect_victim_intact();
  EXPECT_FALSE(fs::exists(victim_ / "sub"));
}

TEST_F(StateDirTest, PathNotBeneathTheRootIsRefused) {
  expect_error([&] { open_state_dir(root_, victim_, true); }, {"not beneath"});
  expect_error([&] { open_state_dir(root_, root_, true); }, {"not beneath"});
  expect_error([&] { open_state_dir(root_, root_.string() + "x/a", true); }, {"not beneath"});
  expect_victim_intact();
}

TEST_F(StateDirTest, DotDotIsNotANormalPath) {
  // resolve_vtpms normalises paths; a ".." that reached this far is refused, not followed
  expect_error([&] { open_state_dir(root_, root_.string() + "/../victim", true); },
               {"normal path"});
  expect_victim_intact();
}

TEST_F(StateDirTest, MountPointBelowTheRootIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a mount namespace";
  fs::create_directories(root_ / "vol");
  // In a child with a mount namespace of its own: the victim bind-mounted into the root, as a
  // volume the workload can read would be.
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount(victim_.c_str(), (root_ / "vol").c_str(), nullptr, MS_BIND, nullptr) != 0)
      ::_exit(2);
    try {
      open_state_dir(root_, root_ / "vol", true);
      ::_exit(1);  // followed the mount
    } catch (const Error& e) {
      ::_exit(std::string(e.what()).find("mount point") != std::string::npos ? 0 : 3);
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  expect_victim_intact();
}

TEST_F(StateDirTest, OnlyWhatItCreatedIsGivenAway) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  const Credentials user{4242, 4242};
  auto d = open_state_dir(root_, root_ / "mine", true, user);
  ASSERT_TRUE(d.created);
  struct stat st {};
  ASSERT_EQ(::fstat(d.fd.get(), &st), 0);
  EXPECT_EQ(st.st_uid, 4242u);
  // an existing directory of someone else is refused, never chowned
  fs::create_directories(root_ / "theirs");
  expect_error([&] { open_state_dir(root_, root_ / "theirs", true, user); },
               {"belongs to uid 0", "does not chown"});
  ASSERT_EQ(::stat((root_ / "theirs").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_NO_THROW(open_state_dir(root_, root_ / "mine", true, user));
}

// A state dir an emulator running as root wrote (before emulators ran as their own user) goes to
// the emulator user with the TPM's files; a file hard-linked in from elsewhere stops it.
TEST_F(StateDirTest, RootsStateIsAdoptedOnlyWhenAsked) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  const Credentials user{4242, 4242};
  const fs::path old = root_ / "old";
  fs::create_directories(old);
  std::ofstream(old / "tpm2-00.permall") << "state";
  expect_error([&] { open_state_dir(root_, old, true, user); }, {"belongs to uid 0"});
  auto d = open_state_dir(root_, old, true, user, /*adopt_root_owned=*/true);
  struct stat st {};
  for (const fs::path& p : {old, old / "tpm2-00.permall"}) {
    ASSERT_EQ(::stat(p.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 4242u) << p;
    EXPECT_EQ(st.st_gid, 4242u) << p;
  }
  const fs::path linked = root_ / "linked";
  fs::create_directories(linked);
  fs::create_hard_link(victim_ / "precious", linked / "tpm2-00.permall");
  expect_error([&] { open_state_dir(root_, linked, true, user, true); },
               {"tpm2-00.permall", "not a regular file of its own"});
  ASSERT_EQ(::stat((victim_ / "precious").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  ASSERT_EQ(::stat(linked.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
}

TEST_F(StateDirTest, RemoveTakesOnlyTheTpmsFiles) {
  const fs::path dir = root_ / "s";
  open_state_dir(root_, dir, true);
  for (const char* f : {"tpm2-00.permall", "tpm2-00.volatilestate", ".lock", "tpm-00.permall"})
    std::ofstream(dir / f) << "x";
  std::ofstream(dir / "notes.txt") << "not the TPM's";
  EXPECT_FALSE(remove_state_dir(root_, dir));
  EXPECT_TRUE(fs::exists(dir / "notes.txt"));
  EXPECT_FALSE(fs::exists(dir / "tpm2-00.permall"));
  fs::remove(dir / "notes.txt");
  EXPECT_TRUE(remove_state_dir(root_, dir));
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_TRUE(remove_state_dir(root_, dir));  // already gone
}

TEST_F(StateDirTest, RemoveNeverFollowsALink) {
  std::ofstream(victim_ / "tpm2-00.permall") << "victim's";
  fs::create_directory_symlink(victim_, root_ / "s");
  expect_error([&] { remove_state_dir(root_, root_ / "s"); }, {"symbolic link"});
  EXPECT_TRUE(fs::exists(victim_ / "tpm2-00.permall"));
  // a TPM file name that is a link to a file elsewhere: the link goes, the file stays
  fs::create_directories(root_ / "t");
  fs::create_symlink(victim_ / "precious", root_ / "t/tpm2-00.permall");
  remove_state_dir(root_, root_ / "t");
  expect_victim_intact(2);
  EXPECT_TRUE(fs::exists(victim_ / "tpm2-00.permall"));
}

// ---- key files ----

TEST_F(StateDirTest, KeyFileThatIsAFifoFailsAtOnce) {
  const fs::path fifo = base_ / "key.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  expect_error([&] { load_key_file(fifo, "binary", 256); }, {"not a regular file"});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

TEST_F(StateDirTest, KeyFilesMustBePrivateRegularFiles) {
  const fs::path key = base_ / "key";
  std::ofstream(key) << std::string(32, 'k');
  ::chmod(key.c_str(), 0600);
  EXPECT_EQ(load_key_file(key, "binary", 256).bytes.size(), 32u);
  ::chmod(key.c_str(), 0620);
  expect_error([&] { load_key_file(key, "binary", 256); }, {"writable by group or others"});
  ::chmod(key.c_str(), 0602);
  expect_error([&] { derive_key_from_password_file(key, 256); }, {"writable by group or others"});
  ::chmod(key.c_str(), 0600);
  fs::create_symlink(key, base_ / "key.link");
  expect_error([&] { load_key_file(base_ / "key.link", "binary", 256); }, {"key.link"});
  expect_error([&] { load_key_file("/dev/zero", "binary", 256); }, {"not a regular file"});
  expect_error([&] { load_key_file(base_, "binary", 256); }, {"not a regular file"});
  std::ofstream(base_ / "big") << std::string(kMaxKeyFileSize + 1, 'k');
  expect_error([&] { load_key_file(base_ / "big", "binary", 256); }, {"too large"});
}

TEST_F(StateDirTest, KeyFilesAreCheckedBeforeAnythingIsCreated) {
  const fs::path fifo = base_ / "pw.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  VtpmSpec spec;
  spec.password_file = fifo;
  expect_error([&] { check_key_files(spec); }, {"not a regular file"});
}

}  // namespace
}  // namespace vtpm
