#include "state/state_key.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/error.h"
#include "error_matchers.h"
#include "state/swtpm_blob.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// tests/data/swtpm, found from this source file's path.
const fs::path kData = fs::path(__FILE__).parent_path().parent_path() / "data" / "swtpm";

Bytes from_hex(const std::string& hex) {
  Bytes out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  return out;
}

Bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "vtpm-key-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  // Writes `content` to a new file in the dir and returns its path.
  std::string file(const std::string& name, const std::string& content) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }

 private:
  std::string path_;
};

using vtpm::testing::expect_error;

TEST(StateKey, BinaryKeyFilesOfTheCaptures) {
  const StateKey k128 = load_key_file((kData / "aes128-binkey.key").string(), "binary", 128);
  EXPECT_EQ(k128.bytes, from_hex("7168ee3bd0c49451544548837a767dbb"));
  const StateKey k256 = load_key_file((kData / "aes256-binkey.key").string(), "binary", 256);
  EXPECT_EQ(k256.bytes, read_file(kData / "aes256-binkey.key"));
  EXPECT_EQ(k256.bytes.size(), 32u);
}

TEST(StateKey, BinaryKeyOfTheWrongSizeIsRefused) {
  // swtpm 0.7.1 refuses a 32-byte key for aes-128-cbc; it would take a 16-byte key for
  // aes-256-cbc as AES-128, which vtpm-hook refuses instead of weakening the key silently.
  const std::string k16 = (kData / "aes128-binkey.key").string();
  const std::string k32 = (kData / "aes256-binkey.key").string();
  expect_error([&] { load_key_file(k32, "binary", 128); }, {k32, "32 bytes", "exactly 16"});
  expect_error([&] { load_key_file(k16, "binary", 256); }, {k16, "16 bytes", "exactly 32"});
  TempDir tmp;
  const std::string empty = tmp.file("empty", "");
  expect_error([&] { load_key_file(empty, "binary", 128); }, {empty, "0 bytes"});
}

TEST(StateKey, HexKeyFiles) {
  TempDir tmp;
  const Bytes want = from_hex("7168ee3bd0c49451544548837a767dbb");
  EXPECT_EQ(load_key_file(tmp.file("a", "7168ee3bd0c49451544548837a767dbb"), "hex", 128).bytes,
            want);
  EXPECT_EQ(load_key_file(tmp.file("b", "0x7168EE3BD0C49451544548837A767DBB\n"), "hex", 128).bytes,
            want);
  const std::string hex256(64, 'a');
  EXPECT_EQ(load_key_file(tmp.file("c", hex256 + "\n"), "hex", 256).bytes, Bytes(32, 0xaa));
}

TEST(StateKey, BadHexKeyFilesNameTheFile) {
  TempDir tmp;
  const std::string bad = tmp.file("bad", "7168ee3bd0c49451544548837a767dbg\n");
  expect_error([&] { load_key_file(bad, "hex", 128); }, {bad, "not a hex key"});
  const std::string short_key = tmp.file("short", "7168ee3bd0c49451544548837a767dbb\n");
  expect_error([&] { load_key_file(short_key, "hex", 256); }, {short_key, "32 hex digits"});
  const std::string odd = tmp.file("odd", "7168ee3bd0c49451544548837a767db\n");
  expect_error([&] { load_key_file(odd, "hex", 128); }, {odd, "31 hex digits"});
  const std::string trailing = tmp.file("trailing", "7168ee3bd0c49451544548837a767dbb xyz\n");
  expect_error([&] { load_key_file(trailing, "hex", 128); }, {trailing, "more text"});
  const std::string empty = tmp.file("empty", "");
  expect_error([&] { load_key_file(empty, "hex", 128); }, {empty, "0 hex digits"});
}

TEST(StateKey, MissingFilesAndBadParametersAreErrors) {
  TempDir tmp;
  const std::string missing = tmp.file("x", "") + "-missing";
  expect_error([&] { load_key_file(missing, "binary", 256); }, {missing, "No such file"});
  expect_error([&] { derive_key_from_password_file(missing, 256); }, {missing, "No such file"});
  const std::string k = (kData / "aes128-binkey.key").string();
  expect_error([&] { load_key_file(k, "base64", 128); }, {k, "unknown key file format"});
  expect_error([&] { load_key_file(k, "binary", 192); }, {"192 bits"});
  expect_error([&] { derive_key_from_password_file(k, 128, "scrypt"); }, {k, "scrypt"});
}

// The hook's rules for a container's key files (issue 18, hole 11): no symlink anywhere on the
// path (the path was checked as a string against the state root and the CA's directory), and
// the owner one the hook names. The emulate command's own files keep the basic rules.
TEST(StateKey, HookRulesRefuseLinksOnThePathAndForeignOwners) {
  TempDir tmp;
  const std::string key = tmp.file("k", std::string(32, 'k'));
  const fs::path dir = fs::path(key).parent_path();
  fs::create_directory(dir / "real");
  tmp.file("real/k", std::string(32, 'r'));
  fs::create_directory_symlink(dir / "real", dir / "link");
  fs::create_symlink(key, dir / "last");
  const std::string via_dir_link = (dir / "link" / "k").string(), last = (dir / "last").string();
  const uid_t me = ::geteuid();
  const SecretFileRules hook{true, {me}};

  EXPECT_EQ(load_key_file(via_dir_link, "binary", 256).bytes, Bytes(32, 'r'));
  expect_error([&] { load_key_file(via_dir_link, "binary", 256, hook); },
               {"state key file " + via_dir_link, "symbolic link"});
  expect_error([&] { derive_key_from_password_file(via_dir_link, 256, "pbkdf2", hook); },
               {"password file " + via_dir_link, "symbolic link"});
  expect_error([&] { open_secret_file(via_dir_link, "password file", kMaxPasswordFileSize, hook); },
               {via_dir_link, "symbolic link"});
  expect_error([&] { load_key_file(last, "binary", 256, hook); }, {last, "symbolic link"});
  EXPECT_EQ(load_key_file(key, "binary", 256, hook).bytes, Bytes(32, 'k'));

  const SecretFileRules other{true, {me + 1}};
  expect_error(
      [&] { load_key_file(key, "binary", 256, other); },
      {key, "belongs to uid " + std::to_string(me), "not to uid " + std::to_string(me + 1)});
  const SecretFileRules either{true, {me + 1, me}};
  EXPECT_EQ(derive_key_from_password_file(key, 256, "pbkdf2", either).bytes.size(), 32u);
}

TEST(StateKey, Pbkdf2LikeSwtpm) {
  // PBKDF2-HMAC-SHA512(password, salt "swtpm", 1000 iterations), computed independently.
  const std::string pwd = (kData / "pbkdf2-pwd.txt").string();  // "secret-pass", no newline
  // pbkdf2 is the default, as in swtpm.
  EXPECT_EQ(derive_key_from_password_file(pwd, 128).bytes,
            derive_key_from_password_file(pwd, 128, "pbkdf2").bytes);
  EXPECT_EQ(derive_key_from_password_file(pwd, 256, "pbkdf2").bytes,
            from_hex("7b8630111a6995f2aa7b97b0a586d7fb5b4ce9a9956025f384ef2142adb6c2fb"));
  // The AES-128 key is the first half (PBKDF2 output blocks are 64 bytes long).
  EXPECT_EQ(derive_key_from_password_file(pwd, 128).bytes,
            from_hex("7b8630111a6995f2aa7b97b0a586d7fb"));
  // Every byte of the file is the password, a newline too.
  TempDir tmp;
  EXPECT_EQ(derive_key_from_password_file(tmp.file("nl", "secret-pass\n"), 128).bytes,
            from_hex("1cd6f3a56ef58d6bc0ad2e51dcd78040"));
}

TEST(StateKey, Sha512KdfLikeSwtpm) {
  const std::string pwd = (kData / "pbkdf2-pwd.txt").string();
  EXPECT_EQ(derive_key_from_password_file(pwd, 256, "sha512").bytes,
            from_hex("a10d3bd2c7aab1560487c776b0b27ecd2e20b8a5d026583e8859b36abde0479f"));
  EXPECT_EQ(derive_key_from_password_file(pwd, 128, "sha512").bytes,
            from_hex("a10d3bd2c7aab1560487c776b0b27ecd"));
}

TEST(StateKey, EmptyPasswordFileIsRefused) {
  TempDir tmp;
  const std::string empty = tmp.file("empty", "");
  expect_error([&] { derive_key_from_password_file(empty, 256); }, {empty, "empty"});
}

TEST(StateKey, PasswordKeyOpensTheRealSwtpmCapture) {
  // swtpm --key pwdfile=pbkdf2-pwd.txt,kdf=pbkdf2 (default mode aes-128-cbc).
  const StateKey key = derive_key_from_password_file((kData / "pbkdf2-pwd.txt").string(), 128);
  const Bytes blob = unwrap_state_blob(read_file(kData / "pbkdf2-pwd.tpm2-00.permall"), &key);
  ASSERT_EQ(blob.size(), 1370u);
  EXPECT_EQ(Bytes(blob.begin(), blob.begin() + 6), from_hex("0003ab364723"));
}

}  // namespace
}  // namespace vtpm
