#include "state/state_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "error_matchers.h"
#include "lock_holder.h"
#include "state/state_key.h"
#include "state/swtpm_blob.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using std::chrono::milliseconds;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "vtpm-ss-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(StateStore, StoreLoadRoundTrip) {
  TempDir tmp;
  StateStore s(tmp.path() + "/tpm", TpmVersion::V2, true);
  EXPECT_EQ(s.dir(), tmp.path() + "/tpm");
  EXPECT_EQ(s.version(), TpmVersion::V2);
  const Bytes blob = {0x00, 0x01, 0x02, 0xff, 0xfe, 0x00, 0x42};
  s.store("permall", blob);
  const auto back = s.load("permall");
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, blob);

  // Overwrite with a different (larger) blob.
  Bytes big(100000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
  big[0] = 0;
  s.store("permall", big);
  EXPECT_EQ(s.load("permall"), big);
}

TEST(StateStore, EmptyBlobRoundTrips) {
  TempDir tmp;
  StateStore s(tmp.path(), TpmVersion::V2, false);
  s.store("volatilestate", Bytes{});
  const auto back = s.load("volatilestate");
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(back->empty());
}

TEST(StateStore, LoadOfMissingNameIsNullopt) {
  TempDir tmp;
  StateStore s(tmp.path(), TpmVersion::V2, false);
  EXPECT_FALSE(s.load("permall").has_value());
  EXPECT_FALSE(s.load("savestate").has_value());
}

TEST(StateStore, Tpm2FileNamesAndFormatOnDisk) {
  TempDir tmp;
  StateStore s(tmp.path(), TpmVersion::V2, false);
  const Bytes blob = {0x00, 0x10, 0x20};
  s.store("permall", blob);
  EXPECT_EQ(entries(tmp.path()), (std::vector<std::string>{".lock", "tpm2-00.permall"}));
  EXPECT_EQ(read_file(tmp.path() + "/tpm2-00.permall"), wrap_state_blob(blob));
  struct stat st {};
  ASSERT_EQ(::stat((tmp.path() + "/tpm2-00.permall").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(StateStore, Tpm12FileNames) {
  TempDir tmp;
  StateStore s(tmp.path(), TpmVersion::V1_2, false);
  EXPECT_EQ(s.version(), TpmVersion::V1_2);
  s.store("permall", Bytes{0x00, 0x01});
  s.store("savestate", Bytes{0x00, 0x02});
  EXPECT_EQ(entries(tmp.path()),
            (std::vector<std::string>{".lock", "tpm-00.permall", "tpm-00.savestate"}));
  EXPECT_EQ(s.load("savestate"), (Bytes{0x00, 0x02}));
}

TEST(StateStore, NoTempFileLeftAfterStore) {
  TempDir tmp;
  StateStore s(tmp.path(), TpmVersion::V2, false);
  for (int i = 0; i < 3; ++i) s.store("volatilestate", Bytes(64, static_cast<uint8_t>(i)));
  for (const auto& name : entries(tmp.path()))
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << name;
  EXPECT_EQ(entries(tmp.path()), (std::vector<std::string>{".lock", "tpm2-00.volatilestate"}));
}

TEST(StateStore, RemoveDeletesAndToleratesMissing) {
  TempDir tmp;
  StateStore s(tmp.path(), TpmVersion::V2, false);
  s.store("savestate", Bytes{0x00});
  s.remove("savestate");
  EXPECT_FALSE(s.load("savestate").has_value());
  EXPECT_NO_THROW(s.remove("savestate"));
  EXPECT_EQ(entries(tmp.path()), (std::vector<std::string>{".lock"}));
}

TEST(StateStore, ReadsSwtpmFileWithoutHeader) {
  TempDir tmp;
  write_file(tmp.path() + "/tpm2-00.permall", Bytes{0x00, 0x03, 0x09});
  StateStore s(tmp.path(), TpmVersion::V2, false);
  EXPECT_EQ(s.load("permall"), (Bytes{0x00, 0x03, 0x09}));
}

TEST(StateStore, CreatesMissingDirectoryWithParents) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/a/b/tpm";
  StateStore s(dir, TpmVersion::V2, true);
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(StateStore, CreatedDirectoriesIgnoreTheUmask) {
  // tpm2-tools start `emulate` through the cmd TCTI with umask 0177.
  TempDir tmp;
  const mode_t old = ::umask(0177);
  const std::string dir = tmp.path() + "/p/q/tpm";
  try {
    StateStore s(dir, TpmVersion::V2, true);
    s.store("permall", Bytes{0x00, 0x01});
  } catch (...) {
    ::umask(old);
    throw;
  }
  ::umask(old);
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((tmp.path() + "/p/q").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  ASSERT_EQ(::stat((dir + "/tpm2-00.permall").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(StateStore, MissingDirectoryWithoutCreateNamesIt) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/absent";
  try {
    StateStore s(dir, TpmVersion::V2, false);
    FAIL() << "opened a missing dir";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir));
}

TEST(StateStore, CorruptFileIsAnErrorNamingTheFile) {
  TempDir tmp;
  // A version-2 blob header claiming 32 bytes in a 12-byte file.
  write_file(tmp.path() + "/tpm2-00.permall",
             Bytes{0x02, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x01});
  StateStore s(tmp.path(), TpmVersion::V2, false);
  try {
    s.load("permall");
    FAIL() << "loaded a corrupt file";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(tmp.path() + "/tpm2-00.permall"), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  }
}

TEST(StateStore, EmptyFileIsAnErrorNamingTheFile) {
  TempDir tmp;
  write_file(tmp.path() + "/tpm2-00.volatilestate", Bytes{});
  StateStore s(tmp.path(), TpmVersion::V2, false);
  try {
    s.load("volatilestate");
    FAIL() << "loaded an empty file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tpm2-00.volatilestate"), std::string::npos) << e.what();
  }
}

TEST(StateStore, SymlinkedStateFileIsNotFollowed) {
  TempDir tmp;
  write_file(tmp.path() + "/elsewhere", Bytes{0x00, 0x07});
  fs::create_symlink(tmp.path() + "/elsewhere", tmp.path() + "/tpm2-00.permall");
  StateStore s(tmp.path(), TpmVersion::V2, false);
  EXPECT_THROW(s.load("permall"), Error);
}

TEST(StateStore, InvalidNamesAreRejected) {
  TempDir tmp;
  StateStore s(tmp.path(), TpmVersion::V2, false);
  EXPECT_THROW(s.store("../escape", Bytes{0x00}), Error);
  EXPECT_THROW(s.load(""), Error);
  EXPECT_FALSE(fs::exists(fs::path(tmp.path()).parent_path() / "escape"));
}

TEST(StateStore, LockHeldByAnotherProcessNamesItsPid) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/tpm";
  LockHolder child(dir);
  try {
    StateStore s(dir, TpmVersion::V2, true);
    FAIL() << "took a lock that another process holds";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("in use by process " + std::to_string(child.pid())), std::string::npos)
        << msg;
    EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  }
  EXPECT_EQ(child.release(), 0);
  EXPECT_NO_THROW(StateStore(dir, TpmVersion::V2, false));
}

UniqueFd open_dir(const std::string& dir) {
  return UniqueFd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
}

TEST(StateStore, LockHolderReportsThePidThenNothing) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/tpm";
  fs::create_directory(dir);
  const UniqueFd fd = open_dir(dir);
  EXPECT_FALSE(state_lock_holder(fd.get()).has_value());  // no lock file yet
  LockHolder child(dir);
  const pid_t pid = child.pid();
  EXPECT_EQ(state_lock_holder(fd.get()), std::optional<pid_t>(pid));
  EXPECT_EQ(child.release(), 0);
  EXPECT_FALSE(state_lock_holder(fd.get()).has_value());
  EXPECT_TRUE(fs::exists(dir + "/.lock"));
}

TEST(StateStore, LockHolderDoesNotSeeOwnProcess) {
  TempDir tmp;
  StateStore s(tmp.path(), TpmVersion::V2, false);
  // fcntl locks never conflict with their own process.
  EXPECT_FALSE(state_lock_holder(open_dir(tmp.path()).get()).has_value());
}

// Whoever owns a state dir can put a link where the lock was: the holder of the file it
// points to (another TPM's lock) is not this dir's.
TEST(StateStore, LockHolderFollowsNoLink) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/tpm", other = tmp.path() + "/other";
  fs::create_directory(dir);
  LockHolder child(other);
  fs::create_symlink(other + "/.lock", dir + "/.lock");
  EXPECT_FALSE(state_lock_holder(open_dir(dir).get()).has_value());
  EXPECT_EQ(state_lock_holder(open_dir(other).get()), std::optional<pid_t>(child.pid()));
}

TEST(StateStore, LockWaitWaitsForRelease) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/tpm";
  LockHolder child(dir, /*hold_ms=*/300);
  const auto start = std::chrono::steady_clock::now();
  StateStore s(dir, TpmVersion::V2, false, std::chrono::seconds(10));
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, milliseconds(150));
  EXPECT_LT(waited, std::chrono::seconds(8));
  EXPECT_EQ(child.wait(), 0);
}

TEST(StateStore, LockWaitGivesUp) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/tpm";
  LockHolder child(dir);
  const auto start = std::chrono::steady_clock::now();
  try {
    StateStore s(dir, TpmVersion::V2, false, milliseconds(100));
    FAIL() << "took a lock that another process holds";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(child.pid())), std::string::npos)
        << e.what();
  }
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, milliseconds(100));
  EXPECT_LT(waited, std::chrono::seconds(5));
  EXPECT_EQ(child.release(), 0);
}

// ---- encrypted state ---------------------------------------------------------------------------

const fs::path kData = fs::path(__FILE__).parent_path().parent_path() / "data" / "swtpm";

using vtpm::testing::expect_error;

TEST(StateStore, EncryptedRoundTripAndFileOnDisk) {
  TempDir tmp;
  const StateKey key{Bytes(32, 0x21)};
  const Bytes blob = {0x00, 0x03, 0x01, 0x02, 0x03};
  {
    StateStore s(tmp.path(), TpmVersion::V2, false, milliseconds(0), key);
    EXPECT_TRUE(s.encrypted());
    s.store("permall", blob);
    EXPECT_EQ(s.load("permall"), blob);
  }
  const Bytes f = read_file(tmp.path() + "/tpm2-00.permall");
  ASSERT_GE(f.size(), 16u);
  EXPECT_EQ(Bytes(f.begin(), f.begin() + 6), (Bytes{0x02, 0x01, 0x00, 0x0a, 0x00, 0x09}));
  EXPECT_EQ(std::search(f.begin(), f.end(), blob.begin(), blob.end()), f.end())
      << "the blob is in the file in clear";
  EXPECT_EQ(unwrap_state_blob(f, &key), blob);
}

TEST(StateStore, EncryptedStateNeedsTheRightKey) {
  TempDir tmp;
  {
    StateStore s(tmp.path(), TpmVersion::V2, false, milliseconds(0), StateKey{Bytes(16, 1)});
    s.store("permall", Bytes{0x00, 0x01});
  }
  const std::string file = tmp.path() + "/tpm2-00.permall";
  {
    StateStore s(tmp.path(), TpmVersion::V2, false);
    EXPECT_FALSE(s.encrypted());
    expect_error([&] { s.load("permall"); }, {file, "state is encrypted; a key is needed"});
  }
  StateStore s(tmp.path(), TpmVersion::V2, false, milliseconds(0), StateKey{Bytes(16, 2)});
  expect_error([&] { s.load("permall"); }, {file, "wrong key or corrupt state"});
}

TEST(StateStore, UnencryptedStateWithAKeyIsRefused) {
  TempDir tmp;
  {
    StateStore s(tmp.path(), TpmVersion::V2, false);
    s.store("permall", Bytes{0x00, 0x01});
  }
  StateStore s(tmp.path(), TpmVersion::V2, false, milliseconds(0), StateKey{Bytes(32, 1)});
  expect_error([&] { s.load("permall"); }, {"tpm2-00.permall", "not encrypted"});
}

TEST(StateStore, ReadsEncryptedStateWrittenBySwtpm) {
  TempDir tmp;
  fs::copy_file(kData / "aes256-binkey.tpm2-00.permall", tmp.path() + "/tpm2-00.permall");
  const StateKey key = load_key_file((kData / "aes256-binkey.key").string(), "binary", 256);
  StateStore s(tmp.path(), TpmVersion::V2, false, milliseconds(0), key);
  const auto blob = s.load("permall");
  ASSERT_TRUE(blob.has_value());
  EXPECT_EQ(blob->size(), 1370u);
}

TEST(StateStore, KeyOfABadSizeIsRefused) {
  TempDir tmp;
  EXPECT_THROW(StateStore(tmp.path(), TpmVersion::V2, false, milliseconds(0), StateKey{Bytes(8)}),
               Error);
}

}  // namespace
}  // namespace vtpm
