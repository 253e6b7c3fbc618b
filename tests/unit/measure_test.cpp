// The measured launch (issue 20) against real libtpms: the PCR holds the replay of the events,
// starts from zeros at every start, and the container's locality 0 can neither reset nor extend
// it.
#include "tpm/measure.h"

#include <gtest/gtest.h>
#include <libtpms/tpm_error.h>
#include <openssl/evp.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/pcr_banks.h"
#include "error_matchers.h"
#include "state/state_store.h"
#include "tpm/command_handler.h"
#include "tpm/provision.h"
#include "tpm/sapi.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

using Bytes = std::vector<uint8_t>;
using vtpm::testing::expect_error;

const EVP_MD* md_of(const std::string& bank) {
  if (bank == "sha1") return EVP_sha1();
  if (bank == "sha256") return EVP_sha256();
  if (bank == "sha384") return EVP_sha384();
  if (bank == "sha512") return EVP_sha512();
  return EVP_sm3();
}

Bytes hash(const std::string& bank, const Bytes& data) {
  Bytes out(static_cast<size_t>(EVP_MD_get_size(md_of(bank))));
  unsigned n = 0;
  EXPECT_EQ(EVP_Digest(data.data(), data.size(), out.data(), &n, md_of(bank), nullptr), 1);
  return out;
}

// Three events, each with a digest for every bank the hook computes (all of kPcrBanks).
std::vector<EventDigests> events() {
  std::vector<EventDigests> out;
  for (const std::string what : {"oci-config", "image", "separator"}) {
    EventDigests e;
    for (const auto& b : kPcrBanks)
      e[std::string(b.name)] = hash(std::string(b.name), Bytes(what.begin(), what.end()));
    out.push_back(e);
  }
  return out;
}

// What a verifier computes from the log: H(...H(H(0 || d1) || d2)... || dn), or from all ones
// (TPM 1.2 PCRs 20-22).
Bytes replay(const std::string& bank, const std::vector<EventDigests>& evs, uint8_t start = 0) {
  Bytes pcr(static_cast<size_t>(EVP_MD_get_size(md_of(bank))), start);
  for (const auto& e : evs) {
    Bytes in = pcr;
    in.insert(in.end(), e.at(bank).begin(), e.at(bank).end());
    pcr = hash(bank, in);
  }
  return pcr;
}

Bytes pcr_read(TpmEngine& engine, const std::string& bank, unsigned pcr) {
  Sapi sapi(engine);
  TPML_PCR_SELECTION sel{};
  sel.count = 1;
  sel.pcrSelections[0].hash = *pcr_bank_alg(bank);
  sel.pcrSelections[0].sizeofSelect = 3;
  sel.pcrSelections[0].pcrSelect[pcr / 8] = static_cast<uint8_t>(1u << (pcr % 8));
  uint32_t counter = 0;
  TPML_PCR_SELECTION out_sel{};
  TPML_DIGEST d{};
  check(Tss2_Sys_PCR_Read(sapi.get(), nullptr, &sel, &counter, &out_sel, &d, nullptr),
        "TPM2_PCR_Read");
  if (d.count != 1) return {};
  return {d.digests[0].buffer, d.digests[0].buffer + d.digests[0].size};
}

// The workload's commands, as bytes, the way they reach the engine (no ESAPI of ours).
Bytes pcr_reset_command(uint32_t pcr) {
  Bytes body;
  proto::put_u32(body, pcr);
  proto::put_u32(body, 9);  // authorization area: TPM_RS_PW, empty nonce, attributes, hmac
  proto::put_u32(body, TPM2_RS_PW);
  body.insert(body.end(), {0, 0, 0, 0, 0});
  return proto::command(proto::kTpm2StSessions, TPM2_CC_PCR_Reset, body);
}

Bytes pcr_extend_command(uint32_t pcr) {
  Bytes body;
  proto::put_u32(body, pcr);
  proto::put_u32(body, 9);
  proto::put_u32(body, TPM2_RS_PW);
  body.insert(body.end(), {0, 0, 0, 0, 0});
  proto::put_u32(body, 1);  // TPML_DIGEST_VALUES: one SHA-256 digest
  proto::put_u16(body, TPM2_ALG_SHA256);
  body.insert(body.end(), 32, 0x5a);
  return proto::command(proto::kTpm2StSessions, TPM2_CC_PCR_Extend, body);
}

Bytes pcr_read_12(TpmEngine& engine, uint32_t pcr) {
  Bytes index;
  proto::put_u32(index, pcr);
  const Bytes r =
      engine.process(proto::command(proto::kTpm12TagRquCommand, proto::kTpm12OrdPcrRead, index));
  EXPECT_EQ(proto::response_code(r), 0u);
  if (r.size() != proto::kHeaderSize + 20) return {};
  return {r.begin() + proto::kHeaderSize, r.end()};
}

class MeasureTest : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(dir_); }
  const std::filesystem::path dir_ = vtpm::testing::test_dir("measure");
};

TEST_F(MeasureTest, PcrHoldsTheReplayInEveryActiveBank) {
  const StateStore store(dir_.string(), TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  apply_pcr_banks(engine, {"sha1", "sha256", "sha384"});
  power_on(engine, /*close_platform=*/true);
  const auto evs = events();
  // what the emulator asks the hook for first: exactly the banks it then extends
  EXPECT_EQ(launch_banks(engine, 21), (std::vector<std::string>{"sha1", "sha256", "sha384"}));
  EXPECT_EQ(measure_launch(engine, 21, evs),
            (std::vector<std::string>{"sha1", "sha256", "sha384"}));
  for (const std::string bank : {"sha1", "sha256", "sha384"})
    EXPECT_EQ(pcr_read(engine, bank, 21), replay(bank, evs)) << bank;
  // The banks the TPM does not have active are not touched (and are not asked for).
  EXPECT_EQ(pcr_read(engine, "sha512", 21), Bytes{});
}

// The attack: the container's commands come at locality 0 (the proxy's locality command is
// clamped to 0 as well, see LocalityRequestsStayAtZero); PCR 21 takes neither a reset nor an
// extend there. The same commands at locality 2 work: the refusal is the locality's.
TEST_F(MeasureTest, LocalityZeroCanNeitherResetNorExtend) {
  const StateStore store(dir_.string(), TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  power_on(engine, /*close_platform=*/true);
  const auto evs = events();
  measure_launch(engine, 21, evs);  // leaves the engine at locality 0
  EXPECT_EQ(proto::response_code(engine.process(pcr_reset_command(21))), TPM2_RC_LOCALITY);
  EXPECT_EQ(proto::response_code(engine.process(pcr_extend_command(21))), TPM2_RC_LOCALITY);
  EXPECT_EQ(pcr_read(engine, "sha256", 21), replay("sha256", evs));
  engine.set_locality(2);
  EXPECT_EQ(proto::response_code(engine.process(pcr_extend_command(21))), 0u);
  EXPECT_EQ(proto::response_code(engine.process(pcr_reset_command(21))), 0u);
  engine.set_locality(0);
}

// The proxy's locality command (the kernel's; a patched one may ask for 2) is answered but the
// engine stays at 0: what run_tpm passes to its CommandHandler.
TEST_F(MeasureTest, LocalityRequestsStayAtZero) {
  const StateStore store(dir_.string(), TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  power_on(engine, /*close_platform=*/true);
  measure_launch(engine, 21, events());
  CommandHandler handler(
      TpmVersion::V2, [&](std::span<const uint8_t> c) { return engine.process(c); },
      workload_locality_sink(engine), /*accept_vendor=*/true);
  Bytes loc;
  proto::put_u16(loc, proto::kTpm2StSessions);
  proto::put_u32(loc, 11);
  proto::put_u32(loc, proto::kVendorSetLocality);
  loc.push_back(2);
  EXPECT_EQ(handler.handle(loc), proto::make_response(TpmVersion::V2, 0));
  EXPECT_EQ(proto::response_code(handler.handle(pcr_extend_command(21))), TPM2_RC_LOCALITY);
  EXPECT_EQ(proto::response_code(handler.handle(pcr_reset_command(21))), TPM2_RC_LOCALITY);
}

// Each start measures from zeros: whatever the PCR held before (a restart of the same
// container, or anything extended at locality 2) is reset first.
TEST_F(MeasureTest, EveryStartMeasuresFromZeros) {
  const StateStore store(dir_.string(), TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  power_on(engine, /*close_platform=*/true);
  const auto evs = events();
  measure_launch(engine, 21, evs);
  const Bytes first = pcr_read(engine, "sha256", 21);
  EXPECT_EQ(first, replay("sha256", evs));
  save_state(engine);
  engine.reset();
  power_on(engine, /*close_platform=*/true);
  engine.set_locality(2);  // something left in the PCR before the measurement
  ASSERT_EQ(proto::response_code(engine.process(pcr_extend_command(21))), 0u);
  engine.set_locality(0);
  measure_launch(engine, 21, evs);
  EXPECT_EQ(pcr_read(engine, "sha256", 21), first);
}

// 0-15 cannot be reset: extended at locality 0 from the zeros of Startup(CLEAR); a resumed
// Startup(STATE) keeps their value, and the measurement refuses to build on it.
TEST_F(MeasureTest, StaticPcrStartsFromClearOnly) {
  const StateStore store(dir_.string(), TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  power_on(engine, /*close_platform=*/true);
  const auto evs = events();
  EXPECT_EQ(measure_launch(engine, 15, evs).size(), 4u);  // libtpms' default: all four SHA banks
  EXPECT_EQ(pcr_read(engine, "sha384", 15), replay("sha384", evs));
  save_state(engine);
  engine.reset();
  check(Tss2_Sys_Startup(Sapi(engine).get(), TPM2_SU_STATE), "TPM2_Startup(STATE)");
  expect_error([&] { measure_launch(engine, 15, evs); }, {"PCR 15", "resumed TPM state"});
  EXPECT_EQ(pcr_read(engine, "sha384", 15), replay("sha384", evs));  // nothing added
}

// TPM 1.2: SHA-1 only; TPM_PCR_Reset of 20-22 outside a dynamic launch gives all ones, so the
// replay starts there (measurement_start_byte).
TEST_F(MeasureTest, Tpm12ExtendsSha1AtLocalityTwo) {
  EXPECT_EQ(measurement_start_byte(TpmVersion::V1_2, 21), 0xff);
  EXPECT_EQ(measurement_start_byte(TpmVersion::V1_2, 15), 0x00);
  EXPECT_EQ(measurement_start_byte(TpmVersion::V2, 21), 0x00);
  const StateStore store(dir_.string(), TpmVersion::V1_2, /*create=*/true);
  TpmEngine engine(store);
  power_on(engine, /*close_platform=*/false);
  const auto evs = events();
  EXPECT_EQ(launch_banks(engine, 21), std::vector<std::string>{"sha1"});
  EXPECT_EQ(measure_launch(engine, 21, evs), std::vector<std::string>{"sha1"});
  EXPECT_EQ(pcr_read_12(engine, 21), replay("sha1", evs, 0xff));
  // The attack at locality 0: TPM_PCR_Reset (TPM_NOTLOCAL) and TPM_Extend (TPM_BAD_LOCALITY)
  // of 21 refused, the value unchanged.
  Bytes sel;
  proto::put_u16(sel, 3);
  sel.insert(sel.end(), {0, 0, 0x20});
  const Bytes reset = proto::command(proto::kTpm12TagRquCommand, proto::kTpm12OrdPcrReset, sel);
  EXPECT_EQ(proto::response_code(engine.process(reset)), static_cast<uint32_t>(TPM_NOTLOCAL));
  Bytes ext;
  proto::put_u32(ext, 21);
  ext.insert(ext.end(), 20, 0x5a);
  const Bytes extend = proto::command(proto::kTpm12TagRquCommand, proto::kTpm12OrdExtend, ext);
  EXPECT_EQ(proto::response_code(engine.process(extend)), static_cast<uint32_t>(TPM_BAD_LOCALITY));
  EXPECT_EQ(pcr_read_12(engine, 21), replay("sha1", evs, 0xff));
  // At locality 2 both work: the refusal above is the locality's.
  engine.set_locality(2);
  EXPECT_EQ(proto::response_code(engine.process(extend)), 0u);
  engine.set_locality(0);
  // A fresh start measures from the reset value again, not on top of the extend above.
  save_state(engine);
  engine.reset();
  power_on(engine, false);
  measure_launch(engine, 21, evs);
  EXPECT_EQ(pcr_read_12(engine, 21), replay("sha1", evs, 0xff));
  // 0-15: from the zeros of TPM_Startup(ST_CLEAR), at locality 0.
  measure_launch(engine, 10, evs);
  EXPECT_EQ(pcr_read_12(engine, 10), replay("sha1", evs));
}

TEST_F(MeasureTest, AnActiveBankWithoutItsDigestIsAnError) {
  const StateStore store(dir_.string(), TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  apply_pcr_banks(engine, {"sha256", "sha384"});
  power_on(engine, /*close_platform=*/true);
  auto evs = events();
  evs[1].erase("sha384");
  expect_error([&] { measure_launch(engine, 21, evs); }, {"event 1", "sha384"});
  evs = events();
  evs[2]["sha256"].pop_back();
  expect_error([&] { measure_launch(engine, 21, evs); }, {"event 2", "31-byte", "sha256"});
  // Refused before the TPM was touched: the PCR is still as Startup left it.
  const Bytes before = pcr_read(engine, "sha256", 21);
  evs = events();
  evs[0].erase("sha256");
  expect_error([&] { measure_launch(engine, 21, evs); }, {"event 0", "sha256"});
  EXPECT_EQ(pcr_read(engine, "sha256", 21), before);
  // Banks that are not active need no digest.
  evs = events();
  evs[0].erase("sha1");
  evs[0].erase("sha512");
  EXPECT_EQ(measure_launch(engine, 21, evs), (std::vector<std::string>{"sha256", "sha384"}));
}

TEST_F(MeasureTest, OnlyMeasurablePcrs) {
  for (unsigned pcr = 0; pcr < 30; ++pcr)
    EXPECT_EQ(measurable_pcr(pcr), pcr <= 15 || (pcr >= 20 && pcr <= 22)) << pcr;
  const StateStore store(dir_.string(), TpmVersion::V2, /*create=*/true);
  TpmEngine engine(store);
  power_on(engine, /*close_platform=*/true);
  for (unsigned pcr : {16u, 17u, 18u, 19u, 23u, 24u}) {
    expect_error([&] { measure_launch(engine, pcr, events()); },
                 {"PCR " + std::to_string(pcr), "cannot hold the launch measurement"});
    expect_error([&] { launch_banks(engine, pcr); },
                 {"PCR " + std::to_string(pcr), "cannot hold the launch measurement"});
  }
}

}  // namespace
}  // namespace vtpm
