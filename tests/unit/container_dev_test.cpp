#include "container/container_dev.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;

// The numbers of /dev/null: harmless if anything ever opened the node.
constexpr DevNum kNull{1, 3};

std::string make_temp_dir(const std::string& prefix) {
  std::string tmpl = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_text(const std::string& path, const std::string& s) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << s;
}

class ContainerDev : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "mknod needs root";
    base_ = make_temp_dir("vtpm-cd");
    rootfs_ = base_ + "/rootfs";
    fs::create_directories(rootfs_);
    // A host directory that a hostile rootfs points at: nothing may appear in it.
    hostdir_ = make_temp_dir("vtpm-cd-host");
    root_fd_.reset(::open(rootfs_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(root_fd_) << "open " << rootfs_;
  }
  void TearDown() override {
    root_fd_.reset();
    std::error_code ec;
    if (!base_.empty()) fs::remove_all(base_, ec);
    if (!hostdir_.empty()) fs::remove_all(hostdir_, ec);
  }

  void make_dev() { fs::create_directory(rootfs_ + "/dev"); }

  std::string dev_path(const std::string& name) const { return rootfs_ + "/dev/" + name; }

  void expect_char_node(const std::string& path, DevNum dev) {
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path;
    EXPECT_TRUE(S_ISCHR(st.st_mode)) << path << " mode " << std::oct << st.st_mode;
    EXPECT_EQ(major(st.st_rdev), dev.major);
    EXPECT_EQ(minor(st.st_rdev), dev.minor);
    EXPECT_EQ(st.st_mode & 07777, 0666u);
  }

  std::string error_of_place(const std::string& name, DevNum dev = kNull) {
    try {
      place_device_node_at(root_fd_.get(), name, dev);
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "place_device_node_at(\"" << name << "\") did not throw";
    return {};
  }

  std::string base_, rootfs_, hostdir_;
  UniqueFd root_fd_;
};

TEST_F(ContainerDev, CreatesCharDeviceWithMode0666) {
  make_dev();
  const mode_t old = ::umask(022);
  place_device_node_at(root_fd_.get(), "tpm0", kNull);
  ::umask(old);
  expect_char_node(dev_path("tpm0"), kNull);
  EXPECT_EQ(entries(rootfs_ + "/dev"), (std::vector<std::string>{"tpm0"}));
}

TEST_F(ContainerDev, CreatesTpmrmNodeWithOtherNumbers) {
  make_dev();
  place_device_node_at(root_fd_.get(), "tpm0", DevNum{10, 224});
  place_device_node_at(root_fd_.get(), "tpmrm0", DevNum{253, 65536 + 5});
  expect_char_node(dev_path("tpm0"), DevNum{10, 224});
  expect_char_node(dev_path("tpmrm0"), DevNum{253, 65536 + 5});
  EXPECT_EQ(entries(rootfs_ + "/dev"), (std::vector<std::string>{"tpm0", "tpmrm0"}));
}

TEST_F(ContainerDev, ReplacesRegularFile) {
  make_dev();
  write_text(dev_path("tpm0"), "placeholder");
  place_device_node_at(root_fd_.get(), "tpm0", kNull);
  expect_char_node(dev_path("tpm0"), kNull);
  EXPECT_EQ(entries(rootfs_ + "/dev"), (std::vector<std::string>{"tpm0"}));
}

TEST_F(ContainerDev, ReplacesFifo) {
  make_dev();
  ASSERT_EQ(::mkfifo(dev_path("tpm0").c_str(), 0644), 0);
  place_device_node_at(root_fd_.get(), "tpm0", kNull);
  expect_char_node(dev_path("tpm0"), kNull);
}

TEST_F(ContainerDev, ReplacesOtherCharDevice) {
  make_dev();
  place_device_node_at(root_fd_.get(), "tpm0", DevNum{1, 5});
  place_device_node_at(root_fd_.get(), "tpm0", kNull);
  expect_char_node(dev_path("tpm0"), kNull);
}

TEST_F(ContainerDev, ReplacesSymlinkWithoutFollowingIt) {
  make_dev();
  const std::string outside = hostdir_ + "/outside-file";
  write_text(outside, "host data");
  ASSERT_EQ(::chmod(outside.c_str(), 0600), 0);
  fs::create_symlink(outside, dev_path("tpm0"));
  place_device_node_at(root_fd_.get(), "tpm0", kNull);
  expect_char_node(dev_path("tpm0"), kNull);
  // The link's target is untouched: same type, content and mode; nothing new beside it.
  struct stat st {};
  ASSERT_EQ(::lstat(outside.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(read_text(outside), "host data");
  EXPECT_EQ(entries(hostdir_), (std::vector<std::string>{"outside-file"}));
}

TEST_F(ContainerDev, ReplacesDanglingSymlinkWithoutCreatingItsTarget) {
  make_dev();
  const std::string target = hostdir_ + "/would-be-created";
  fs::create_symlink(target, dev_path("tpm0"));
  place_device_node_at(root_fd_.get(), "tpm0", kNull);
  expect_char_node(dev_path("tpm0"), kNull);
  EXPECT_TRUE(entries(hostdir_).empty());
}

TEST_F(ContainerDev, RefusesDirectoryAndLeavesNoTempFile) {
  make_dev();
  fs::create_directory(dev_path("tpm0"));
  write_text(dev_path("tpm0") + "/keep", "x");
  const auto msg = error_of_place("tpm0");
  EXPECT_NE(msg.find("/dev/tpm0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("directory"), std::string::npos) << msg;
  EXPECT_EQ(entries(rootfs_ + "/dev"), (std::vector<std::string>{"tpm0"}));
  EXPECT_TRUE(fs::is_directory(dev_path("tpm0")));
  EXPECT_EQ(entries(dev_path("tpm0")), (std::vector<std::string>{"keep"}));
}

TEST_F(ContainerDev, RefusesEmptyDirectoryToo) {
  make_dev();
  fs::create_directory(dev_path("tpm0"));
  const auto msg = error_of_place("tpm0");
  EXPECT_NE(msg.find("directory"), std::string::npos) << msg;
  EXPECT_EQ(entries(rootfs_ + "/dev"), (std::vector<std::string>{"tpm0"}));
  EXPECT_TRUE(fs::is_directory(dev_path("tpm0")));
}

TEST_F(ContainerDev, MissingDevDirectoryIsAnError) {
  const auto msg = error_of_place("tpm0");
  EXPECT_NE(msg.find("/dev"), std::string::npos) << msg;
  EXPECT_EQ(entries(rootfs_), std::vector<std::string>{});
}

TEST_F(ContainerDev, AbsoluteDevSymlinkStaysInsideTheRoot) {
  fs::create_symlink(hostdir_, rootfs_ + "/dev");
  try {
    place_device_node_at(root_fd_.get(), "tpm0", kNull);
    // Only acceptable if it landed inside the rootfs, which it cannot here: no such dir inside.
    ADD_FAILURE() << "placed a node although " << rootfs_ << hostdir_ << " does not exist";
  } catch (const Error&) {
  }
  EXPECT_TRUE(entries(hostdir_).empty());
  EXPECT_FALSE(fs::exists(fs::path(hostdir_) / "tpm0"));
}

TEST_F(ContainerDev, AbsoluteDevSymlinkResolvesInTheRoot) {
  // The same link, but the rootfs has the directory it names: the node lands there.
  fs::create_directories(rootfs_ + hostdir_);
  fs::create_symlink(hostdir_, rootfs_ + "/dev");
  place_device_node_at(root_fd_.get(), "tpm0", kNull);
  expect_char_node(rootfs_ + hostdir_ + "/tpm0", kNull);
  EXPECT_TRUE(entries(hostdir_).empty());
}

TEST_F(ContainerDev, RelativeDevSymlinkCannotClimbOut) {
  // From <base>/rootfs, "../../../.." + hostdir reaches the host's hostdir if followed naively.
  fs::create_symlink("../../../../../.." + hostdir_, rootfs_ + "/dev");
  ASSERT_TRUE(fs::equivalent(rootfs_ + "/dev", hostdir_)) << "the link does point out on the host";
  try {
    place_device_node_at(root_fd_.get(), "tpm0", kNull);
    ADD_FAILURE() << "placed a node although the clamped path does not exist";
  } catch (const Error&) {
  }
  EXPECT_TRUE(entries(hostdir_).empty());
}

TEST_F(ContainerDev, RelativeDevSymlinkIsClampedToTheRoot) {
  fs::create_directories(rootfs_ + hostdir_);
  fs::create_symlink("../../../../../.." + hostdir_, rootfs_ + "/dev");
  place_device_node_at(root_fd_.get(), "tpm0", kNull);
  expect_char_node(rootfs_ + hostdir_ + "/tpm0", kNull);
  EXPECT_TRUE(entries(hostdir_).empty());
}

TEST_F(ContainerDev, BadNamesAreRejected) {
  make_dev();
  const std::vector<std::string> bad = {"", "../x", "a/b", ".", "..", ".hidden", "/tpm0"};
  for (const std::string& name : bad) {
    const auto msg = error_of_place(name);
    EXPECT_NE(msg.find("bad device name"), std::string::npos) << "'" << name << "': " << msg;
  }
  EXPECT_TRUE(entries(rootfs_ + "/dev").empty());
  EXPECT_EQ(entries(rootfs_), (std::vector<std::string>{"dev"}));
  EXPECT_EQ(entries(base_), (std::vector<std::string>{"rootfs"}));
}

TEST_F(ContainerDev, PlaceAndRemoveThroughProcPidRoot) {
  // Our own pid: /proc/<pid>/root is the host root, and the rootfs sits at its host path.
  make_dev();
  place_device_node(::getpid(), rootfs_, "tpm0", kNull, "/dev/null");
  expect_char_node(dev_path("tpm0"), kNull);
  remove_device_node(::getpid(), rootfs_, "tpm0");
  EXPECT_TRUE(entries(rootfs_ + "/dev").empty());
}

TEST_F(ContainerDev, RemoveLeavesNonDevicesAlone) {
  make_dev();
  write_text(dev_path("tpm0"), "not a device");
  remove_device_node(::getpid(), rootfs_, "tpm0");
  EXPECT_EQ(read_text(dev_path("tpm0")), "not a device");
  // And tolerates a missing container.
  EXPECT_NO_THROW(remove_device_node(0x3ffffe, rootfs_, "tpm0"));
}

// A child in a mount namespace of its own, standing for a container; it exits when destroyed.
class MountNsChild {
 public:
  MountNsChild() {
    int ready[2], hold[2];
    if (::pipe(ready) != 0 || ::pipe(hold) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(ready[0]);
      ::close(hold[1]);
      const bool ok = ::unshare(CLONE_NEWNS) == 0 &&
                      ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0;
      (void)!::write(ready[1], ok ? "y" : "n", 1);
      char c;
      (void)!::read(hold[0], &c, 1);  // EOF: the test is over
      ::_exit(0);
    }
    ::close(ready[1]);
    ::close(hold[0]);
    hold_ = hold[1];
    char c = 0;
    (void)!::read(ready[0], &c, 1);
    ::close(ready[0]);
    if (c != 'y') throw std::runtime_error("the child could not unshare its mount namespace");
  }
  ~MountNsChild() {
    ::close(hold_);
    (void)::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }
  std::string root_view(const std::string& path) const {
    return "/proc/" + std::to_string(pid_) + "/root" + path;
  }

 private:
  pid_t pid_ = -1;
  int hold_ = -1;
};

TEST_F(ContainerDev, ReadOnlyFilesShowInTheContainerOnly) {
  MountNsChild c;
  place_readonly_files(c.pid(), rootfs_, "run/vtpm-hook",
                       {{"measurements.cel.json", "[1,2,3]"}, {"measurements-1.cel.json", "[]"}});
  const std::string inside = c.root_view(rootfs_ + "/run/vtpm-hook/measurements.cel.json");
  EXPECT_EQ(read_text(inside), "[1,2,3]");
  EXPECT_EQ(read_text(c.root_view(rootfs_ + "/run/vtpm-hook/measurements-1.cel.json")), "[]");
  // Read-only even for root (the attack: the workload rewriting what the host says it ran),
  // and no new file either.
  errno = 0;
  EXPECT_LT(::open(inside.c_str(), O_WRONLY | O_CLOEXEC), 0);
  EXPECT_EQ(errno, EROFS);
  const std::string other = c.root_view(rootfs_ + "/run/vtpm-hook/x");
  EXPECT_LT(::open(other.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600), 0);
  struct stat st {};
  ASSERT_EQ(::stat(inside.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  ASSERT_EQ(::stat((rootfs_ + "/run/vtpm-hook").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  // The host's mount namespace sees only the empty mount point.
  EXPECT_TRUE(entries(rootfs_ + "/run/vtpm-hook").empty());
  // Set up again in the same namespace (by hand): the new one covers the old one.
  place_readonly_files(c.pid(), rootfs_, "run/vtpm-hook", {{"measurements.cel.json", "[1,2]"}});
  EXPECT_EQ(read_text(inside), "[1,2]");
  // A restart: a new mount namespace on the same rootfs.
  MountNsChild again;
  place_readonly_files(again.pid(), rootfs_, "run/vtpm-hook", {{"measurements.cel.json", "[4]"}});
  EXPECT_EQ(read_text(again.root_view(rootfs_ + "/run/vtpm-hook/measurements.cel.json")), "[4]");
}

TEST_F(ContainerDev, ReadOnlyFilesNeverLandOutsideTheRoot) {
  // A hostile rootfs whose /run points at a host directory.
  fs::create_directory_symlink(hostdir_, rootfs_ + "/run");
  MountNsChild c;
  EXPECT_THROW(place_readonly_files(c.pid(), rootfs_, "run/vtpm-hook", {{"log", "[]"}}), Error);
  EXPECT_TRUE(entries(hostdir_).empty());
  // A name with a slash or a dot first: refused before anything is made.
  EXPECT_THROW(place_readonly_files(c.pid(), rootfs_, "x", {{"a/b", ""}}), Error);
  EXPECT_THROW(place_readonly_files(c.pid(), rootfs_, "x", {{"..", ""}}), Error);
  EXPECT_EQ(entries(rootfs_), (std::vector<std::string>{"run"}));
}

TEST_F(ContainerDev, RestoredRootIsSeenOnceTheProcessLeavesTheHostsRoot) {
  // A process in a mount namespace of its own, still on the host's root: as CRIU's restored
  // task is while the hooks run. It pivots (chroot stands in) a moment later.
  make_dev();
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(go[1]);
    char ch;
    if (::unshare(CLONE_NEWNS) != 0 || ::read(go[0], &ch, 1) != 1 || ::chroot(rootfs_.c_str()) != 0)
      ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  ::close(go[0]);
  EXPECT_FALSE(wait_for_restored_root(pid, "dev/tpm0", std::chrono::milliseconds(100)).get() >= 0);
  ASSERT_EQ(::write(go[1], "g", 1), 1);
  // a root of its own, but not yet the one with the checkpoint's node
  EXPECT_FALSE(wait_for_restored_root(pid, "dev/tpm0", std::chrono::milliseconds(300)).get() >= 0);
  ASSERT_EQ(::mknod((rootfs_ + "/dev/tpm0").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);
  const UniqueFd root = wait_for_restored_root(pid, "dev/tpm0", std::chrono::seconds(10));
  ASSERT_TRUE(root.get() >= 0);
  struct stat a {
  }, b{};
  ASSERT_EQ(::fstat(root.get(), &a), 0);
  ASSERT_EQ(::stat(rootfs_.c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);  // the process's root, not the host's
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ::close(go[1]);
  EXPECT_FALSE(wait_for_restored_root(pid, "dev/tpm0", std::chrono::seconds(1)).get() >=
               0);  // gone
}

}  // namespace
}  // namespace vtpm
