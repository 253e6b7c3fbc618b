#include "tpm/command_handler.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "state/state_store.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

using Bytes = std::vector<uint8_t>;

const Bytes kGetRandom8 = {0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x7b, 0x00, 0x08};
const Bytes kCannedResponse = {0x80, 0x01, 0x00, 0x00, 0x00, 0x0c,
                               0x00, 0x00, 0x00, 0x00, 0xab, 0xcd};

Bytes locality_command(uint8_t loc, uint16_t tag = proto::kTpm2StSessions) {
  Bytes c;
  proto::put_u16(c, tag);
  proto::put_u32(c, 11);
  proto::put_u32(c, proto::kVendorSetLocality);
  c.push_back(loc);
  return c;
}

uint32_t rc_of(const Bytes& resp) {
  EXPECT_GE(resp.size(), proto::kHeaderSize);
  if (resp.size() < proto::kHeaderSize) return 0xffffffff;
  return proto::get_u32(resp, 6);
}

// A backend that records every command and answers with a canned response.
struct Recorder {
  std::vector<Bytes> commands;
  std::vector<uint8_t> localities;
  Bytes response = kCannedResponse;

  CommandHandler handler(TpmVersion v, bool accept_vendor) {
    return CommandHandler(
        v,
        [this](std::span<const uint8_t> c) {
          commands.emplace_back(c.begin(), c.end());
          return response;
        },
        [this](uint8_t loc) { localities.push_back(loc); }, accept_vendor);
  }
};

TEST(CommandHandler, ForwardsANormalCommandUnchanged) {
  Recorder rec;
  auto h = rec.handler(TpmVersion::V2, true);
  EXPECT_EQ(h.handle(kGetRandom8), kCannedResponse);
  ASSERT_EQ(rec.commands.size(), 1u);
  EXPECT_EQ(rec.commands[0], kGetRandom8);
  EXPECT_TRUE(rec.localities.empty());
}

TEST(CommandHandler, LocalityCommandIsAnsweredWithoutTheBackend) {
  Recorder rec;
  auto h = rec.handler(TpmVersion::V2, true);
  const Bytes resp = h.handle(locality_command(3));
  EXPECT_EQ(resp, (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00}));
  EXPECT_TRUE(rec.commands.empty());
  EXPECT_EQ(rec.localities, (std::vector<uint8_t>{3}));
  h.handle(locality_command(0));
  h.handle(locality_command(4));
  EXPECT_EQ(rec.localities, (std::vector<uint8_t>{3, 0, 4}));
  EXPECT_TRUE(rec.commands.empty());
}

TEST(CommandHandler, LocalityFiveOrMoreIsRejected) {
  Recorder rec;
  auto h = rec.handler(TpmVersion::V2, true);
  for (uint8_t loc : {5, 6, 0x7f, 0xff}) {
    const Bytes resp = h.handle(locality_command(loc));
    EXPECT_EQ(resp.size(), proto::kHeaderSize);
    EXPECT_EQ(proto::get_u16(resp, 0), proto::kTpm2StNoSessions);
    EXPECT_EQ(rc_of(resp), proto::kTpm2RcValue) << "locality " << int{loc};
  }
  EXPECT_TRUE(rec.localities.empty());
  EXPECT_TRUE(rec.commands.empty());
}

TEST(CommandHandler, MalformedLocalityCommandIsRejected) {
  Recorder rec;
  auto h = rec.handler(TpmVersion::V2, true);
  Bytes c = locality_command(1);
  c.push_back(0);  // 2 bytes of parameters
  c[5] = 12;
  EXPECT_EQ(rc_of(h.handle(c)), proto::kTpm2RcCommandSize);
  Bytes bare = {0x80, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x20, 0x00, 0x10, 0x00};
  EXPECT_EQ(rc_of(h.handle(bare)), proto::kTpm2RcCommandSize);
  EXPECT_TRUE(rec.localities.empty());
  EXPECT_TRUE(rec.commands.empty());
}

TEST(CommandHandler, VendorCommandGoesToTheBackendWhenNotAccepted) {
  Recorder rec;
  auto h = rec.handler(TpmVersion::V2, false);
  const Bytes c = locality_command(2);
  EXPECT_EQ(h.handle(c), kCannedResponse);
  ASSERT_EQ(rec.commands.size(), 1u);
  EXPECT_EQ(rec.commands[0], c);
  EXPECT_TRUE(rec.localities.empty());
}

TEST(CommandHandler, SizeFieldMismatchIsACommandSizeError) {
  Recorder rec;
  auto h = rec.handler(TpmVersion::V2, true);
  Bytes longer = kGetRandom8;
  longer.push_back(0);  // 13 bytes, header says 12
  EXPECT_EQ(h.handle(longer), (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x42}));
  Bytes shorter(kGetRandom8.begin(), kGetRandom8.end() - 1);  // 11 bytes, header says 12
  EXPECT_EQ(rc_of(h.handle(shorter)), proto::kTpm2RcCommandSize);
  EXPECT_TRUE(rec.commands.empty());
}

TEST(CommandHandler, ShortCommandIsAnErrorResponse) {
  Recorder rec;
  auto h = rec.handler(TpmVersion::V2, true);
  EXPECT_EQ(h.handle(Bytes{}), (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x42}));
  EXPECT_EQ(rc_of(h.handle(Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x01})),
            proto::kTpm2RcCommandSize);
  EXPECT_TRUE(rec.commands.empty());
}

TEST(CommandHandler, OversizedCommandIsRejected) {
  Recorder rec;
  auto h = rec.handler(TpmVersion::V2, true);
  Bytes big(proto::kMaxCommandSize + 1, 0);
  big[0] = 0x80;
  big[1] = 0x01;
  big[4] = static_cast<uint8_t>(big.size() >> 8);
  big[5] = static_cast<uint8_t>(big.size());
  big[9] = 0x7b;
  EXPECT_EQ(rc_of(h.handle(big)), proto::kTpm2RcCommandSize);
  EXPECT_TRUE(rec.commands.empty());
}

TEST(CommandHandler, BackendAnsweringTooLittleBecomesFailure) {
  Recorder rec;
  rec.response = {0x80, 0x01, 0x00};
  auto h = rec.handler(TpmVersion::V2, true);
  EXPECT_EQ(h.handle(kGetRandom8),
            (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x01}));
  EXPECT_EQ(rec.commands.size(), 1u);
}

TEST(CommandHandler, Tpm12FlavourResponses) {
  Recorder rec;
  auto h = rec.handler(TpmVersion::V1_2, true);
  // Short command: TPM_BAD_PARAM_SIZE with TPM_TAG_RSP_COMMAND.
  EXPECT_EQ(h.handle(Bytes{0x00, 0xc1, 0x00}),
            (Bytes{0x00, 0xc4, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x19}));
  // Locality accepted: success with the 1.2 tag.
  EXPECT_EQ(h.handle(locality_command(1, proto::kTpm12TagRquCommand)),
            (Bytes{0x00, 0xc4, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00}));
  EXPECT_EQ(rec.localities, (std::vector<uint8_t>{1}));
  // Locality out of range: TPM_BAD_PARAMETER.
  EXPECT_EQ(h.handle(locality_command(9, proto::kTpm12TagRquCommand)),
            (Bytes{0x00, 0xc4, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x03}));
  // Backend failure: TPM_FAIL.
  rec.response = {};
  const Bytes save_state = {0x00, 0xc1, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x98};
  EXPECT_EQ(h.handle(save_state),
            (Bytes{0x00, 0xc4, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x09}));
  ASSERT_EQ(rec.commands.size(), 1u);
  EXPECT_EQ(rec.commands[0], save_state);
}

// ---- with the real libtpms ----

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vtpm-ch-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(CommandHandlerWithLibtpms, StartupThenGetRandom) {
  TempDir tmp;
  StateStore store(tmp.path() + "/tpm", TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  CommandHandler h(
      TpmVersion::V2, [&](std::span<const uint8_t> c) { return engine.process(c); },
      [&](uint8_t loc) { engine.set_locality(loc); }, true);

  EXPECT_EQ(h.handle(locality_command(0)),
            (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00}));
  EXPECT_EQ(h.handle(proto::startup_command(TpmVersion::V2, true)),
            (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00}));

  const Bytes resp = h.handle(kGetRandom8);
  ASSERT_EQ(resp.size(), 20u);
  EXPECT_EQ(proto::get_u16(resp, 0), proto::kTpm2StNoSessions);
  EXPECT_EQ(proto::get_u32(resp, 2), 20u);
  EXPECT_EQ(rc_of(resp), 0u);
  EXPECT_EQ(proto::get_u16(resp, 10), 8u);  // TPM2B_DIGEST size

  // A second Startup is TPM_RC_INITIALIZE: the engine really is running.
  EXPECT_EQ(rc_of(h.handle(proto::startup_command(TpmVersion::V2, true))), 0x100u);
  // The manufactured TPM stored its permanent state.
  EXPECT_TRUE(std::filesystem::exists(tmp.path() + "/tpm/tpm2-00.permall"));
}

TEST(CommandHandlerWithLibtpms, OnlyOneEnginePerProcess) {
  TempDir tmp;
  StateStore a(tmp.path() + "/a", TpmVersion::V2, true);
  StateStore b(tmp.path() + "/b", TpmVersion::V2, true);
  TpmEngine first(a);
  try {
    TpmEngine second(b);
    FAIL() << "a second engine started";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("one TPM per process"), std::string::npos) << e.what();
  }
  // The first engine is unharmed.
  EXPECT_EQ(rc_of(first.process(proto::startup_command(TpmVersion::V2, true))), 0u);
}

TEST(CommandHandlerWithLibtpms, StateSurvivesShutdownStateAndRestart) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/tpm";
  {
    StateStore store(dir, TpmVersion::V2, true);
    TpmEngine engine(store);
    ASSERT_EQ(rc_of(engine.process(proto::startup_command(TpmVersion::V2, true))), 0u);
    ASSERT_EQ(rc_of(engine.process(proto::shutdown_state_command(TpmVersion::V2))), 0u);
  }
  {
    StateStore store(dir, TpmVersion::V2, false);
    TpmEngine engine(store);
    EXPECT_EQ(rc_of(engine.process(proto::startup_command(TpmVersion::V2, false))), 0u);
    const Bytes resp = engine.process(kGetRandom8);
    EXPECT_EQ(rc_of(resp), 0u);
    EXPECT_EQ(resp.size(), 20u);
  }
}

TEST(CommandHandlerWithLibtpms, StartupStateWithoutSavedStateFails) {
  TempDir tmp;
  StateStore store(tmp.path() + "/tpm", TpmVersion::V2, true);
  TpmEngine engine(store);
  // A fresh TPM has no saved state: TPM_RC_VALUE + parameter 1 (0x1c4).
  EXPECT_NE(rc_of(engine.process(proto::startup_command(TpmVersion::V2, false))), 0u);
}

}  // namespace
}  // namespace vtpm
