// Export archives: sealed so that a wrong key, a flipped bit or a foreign file is refused
// before anything is written, and carrying exactly the TPM's own files.
#include "state/state_archive.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <libtpms/tpm_nvfilename.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>

#include "common/io_util.h"
#include "error_matchers.h"
#include "hook/state_transfer.h"
#include "lock_holder.h"
#include "state/state_store.h"
#include "state/swtpm_blob.h"
#include "tpm/tpm_engine.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;
using vtpm::testing::expect_error;

ArchiveSecret key_secret(uint8_t fill = 7) {
  return {ArchiveSecret::Kind::Key, StateKey(std::vector<uint8_t>(32, fill))};
}
ArchiveSecret password_secret(const std::string& p) {
  return {ArchiveSecret::Kind::Password, StateKey(std::vector<uint8_t>(p.begin(), p.end()))};
}

StateArchive sample() {
  StateArchive a;
  a.version = TpmVersion::V2;
  a.libtpms_version = 0x000906;
  a.source = "c1 vTPM 0 (/var/lib/vtpm-hook/c1)";
  a.exported_at = "2026-12-03T10:00:00Z";
  const std::vector<uint8_t> blob = {0, 3, 1, 2, 3, 4};
  a.files = {{"tpm2-00.permall", wrap_state_blob(blob)},
             {"ek-certificates.pem", {'-', '-', '-', '\n'}}};
  return a;
}

void expect_same(const StateArchive& a, const StateArchive& b) {
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.libtpms_version, b.libtpms_version);
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.exported_at, b.exported_at);
  EXPECT_EQ(a.encrypted_at_rest, b.encrypted_at_rest);
  EXPECT_EQ(a.files, b.files);
}

TEST(StateArchive, RoundTripsWithAKeyAndWithAPassword) {
  const auto k = key_secret();
  expect_same(open_archive(seal_archive(sample(), k), k), sample());
  const auto p = password_secret("correct horse\n");
  const auto sealed = seal_archive(sample(), p, 1000);
  expect_same(open_archive(sealed, p), sample());
  // fresh salt and nonce each time: two seals of one state differ
  EXPECT_NE(seal_archive(sample(), p, 1000), sealed);
}

TEST(StateArchive, EveryFlippedByteIsRefused) {
  const auto k = key_secret();
  const auto sealed = seal_archive(sample(), k);
  for (size_t i = 0; i < sealed.size(); ++i) {
    auto bad = sealed;
    bad[i] ^= 0x01;
    EXPECT_THROW(open_archive(bad, k), Error) << "byte " << i;
  }
  // the body or the tag: the authentication tag says so (header fields have their own words)
  auto bad = sealed;
  bad[bad.size() - 1] ^= 0x80;
  expect_error([&] { open_archive(bad, k); }, {"wrong key or damaged archive"});
  bad = sealed;
  bad[60] ^= 0x80;
  expect_error([&] { open_archive(bad, k); }, {"wrong key or damaged archive"});
}

TEST(StateArchive, WrongKeyWrongKindTruncationAndForeignFormatAreRefused) {
  const auto sealed = seal_archive(sample(), key_secret(7));
  expect_error([&] { open_archive(sealed, key_secret(8)); }, {"wrong key or damaged archive"});
  expect_error([&] { open_archive(sealed, password_secret("x")); }, {"sealed with a key file"});
  expect_error(
      [&] {
        open_archive(seal_archive(sample(), password_secret("a"), 1000), password_secret("b"));
      },
      {"wrong key"});
  expect_error([&] { open_archive(std::span(sealed).first(40), key_secret(7)); },
               {"not a vtpm-hook export archive"});
  expect_error([&] { open_archive(std::span(sealed).first(sealed.size() - 1), key_secret(7)); },
               {"wrong key or damaged archive"});
  auto v2 = sealed;
  v2[17] = 2;  // format 2: said before (and whatever) the tag says
  expect_error([&] { open_archive(v2, key_secret(7)); }, {"archive format 2", "format 1"});
  const std::string text = "{\"not\": \"an archive\"}";
  expect_error(
      [&] {
        open_archive(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()),
                     key_secret(7));
      },
      {"not a vtpm-hook export archive"});
  // a key file of another size is no export key
  expect_error(
      [&] {
        seal_archive(sample(), ArchiveSecret{ArchiveSecret::Kind::Key, StateKey({1, 2, 3})});
      },
      {"32 bytes"});
}

TEST(StateArchive, CarriesOnlyTheTpmsOwnFilesAndAlwaysItsPermanentState) {
  const auto k = key_secret();
  for (const std::string name : {"../escape", ".lock", "tpm-00.permall", "x/y", ""}) {
    StateArchive a = sample();
    a.files.push_back({name, {1}});
    expect_error([&] { open_archive(seal_archive(a, k), k); }, {"carries a file no TPM 2 has"});
  }
  StateArchive a = sample();
  a.files.erase(a.files.begin());
  expect_error([&] { open_archive(seal_archive(a, k), k); }, {"no permanent state"});
}

class StateTransfer : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = vtpm::testing::test_dir("xfer");
    fs::create_directories(base_);
    opts_.state_root = (base_ / "state").string();
    opts_.run_root = (base_ / "run").string();
    opts_.policy = (base_ / "no-policy.json").string();
    opts_.ca_key = (base_ / "ca" / "key.pem").string();
    opts_.ca_cert = (base_ / "ca" / "cert.pem").string();
    // a real TPM's state: manufactured by libtpms, shut down as teardown leaves it
    StateStore store(opts_.state_root + "/c1", TpmVersion::V2, /*create=*/true);
    TpmEngine engine(store);
    write_text(opts_.state_root + "/c1/ek-certificates.pem", "certs\n");
  }
  void TearDown() override { fs::remove_all(base_); }
  static void write_text(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }
  static std::string read_text(const fs::path& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  TransferOptions xfer(const std::string& id, const std::string& file) {
    TransferOptions t;
    t.id = id;
    t.file = (base_ / file).string();
    return t;
  }

  fs::path base_;
  HookOptions opts_;
};

TEST_F(StateTransfer, ExportThenImportGivesTheSameFiles) {
  const auto k = key_secret();
  export_state(opts_, xfer("c1", "a.bin"), k);
  import_state(opts_, xfer("c2", "a.bin"), k);
  for (const char* f : {"tpm2-00.permall", "ek-certificates.pem"})
    EXPECT_EQ(read_text(opts_.state_root + "/c2/" + f), read_text(opts_.state_root + "/c1/" + f));
  // and libtpms loads it
  StateStore store(opts_.state_root + "/c2", TpmVersion::V2, /*create=*/false);
  EXPECT_NO_THROW(TpmEngine{store});
}

TEST_F(StateTransfer, SaysWhetherTheStateIsSealedWithAStateKey) {
  auto encrypted_at_rest = [&](const std::string& dir) {
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    return read_state_files(fd.get(), dir).encrypted_at_rest;
  };
  EXPECT_FALSE(encrypted_at_rest(opts_.state_root + "/c1"));
  {
    StateStore sealed(opts_.state_root + "/s", TpmVersion::V2, true, {},
                      StateKey(std::vector<uint8_t>(32, 5)));
    sealed.store(TPM_PERMANENT_ALL_NAME, std::vector<uint8_t>{0, 3, 1});
  }
  EXPECT_TRUE(encrypted_at_rest(opts_.state_root + "/s"));
  // neither: not a state file at all
  write_text(opts_.state_root + "/s/tpm2-00.permall", "");
  expect_error([&] { encrypted_at_rest(opts_.state_root + "/s"); }, {"tpm2-00.permall"});
}

TEST_F(StateTransfer, ARunningTpmIsNotExported) {
  LockHolder running(opts_.state_root + "/c1");
  expect_error([&] { export_state(opts_, xfer("c1", "a.bin"), key_secret()); },
               {"in use by process", "stop the container first"});
  EXPECT_FALSE(fs::exists(base_ / "a.bin"));
}

TEST_F(StateTransfer, ImportNeverOverwritesUnlessForcedAndFailsWithoutATrace) {
  const auto k = key_secret();
  export_state(opts_, xfer("c1", "a.bin"), k);
  // an existing TPM's state stays unless --force
  {
    StateStore other(opts_.state_root + "/c3", TpmVersion::V2, true);
    other.store(TPM_PERMANENT_ALL_NAME, std::vector<uint8_t>{0, 3, 9, 9});
    other.store(TPM_VOLATILESTATE_NAME, std::vector<uint8_t>{0, 4, 9, 9});
  }
  std::optional<LockHolder> running(std::in_place, opts_.state_root + "/c3");
  const std::string before = read_text(opts_.state_root + "/c3/tpm2-00.permall");
  auto forced = xfer("c3", "a.bin");
  forced.force = true;
  expect_error([&] { import_state(opts_, forced, k); }, {"in use by process"});  // running
  running.reset();
  expect_error([&] { import_state(opts_, xfer("c3", "a.bin"), k); }, {"--force replaces it"});
  EXPECT_EQ(read_text(opts_.state_root + "/c3/tpm2-00.permall"), before);
  import_state(opts_, forced, k);
  EXPECT_EQ(read_text(opts_.state_root + "/c3/tpm2-00.permall"),
            read_text(opts_.state_root + "/c1/tpm2-00.permall"));
  // the old TPM's volatile state is not the new one's
  EXPECT_FALSE(fs::exists(opts_.state_root + "/c3/tpm2-00.volatilestate"));
  // a wrong key or a damaged archive: no directory made, nothing written
  expect_error([&] { import_state(opts_, xfer("c4", "a.bin"), key_secret(9)); }, {"wrong key"});
  EXPECT_FALSE(fs::exists(opts_.state_root + "/c4"));
}

}  // namespace
}  // namespace vtpm
