#include "tpm/measure.h"

#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <span>

#include "common/error.h"
#include "common/pcr_banks.h"
#include "tpm/sapi.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

// Where the platform (not the OS, not the container: it only ever gets locality 0) resets and
// extends PCRs 20-22 (TCG PC Client; libtpms' PCR attributes for both TPM versions).
constexpr uint8_t kLaunchLocality = 2;

bool resettable(unsigned pcr) { return pcr >= 20; }

size_t digest_size(uint16_t alg) {
  switch (alg) {
    case TPM2_ALG_SHA1:
      return TPM2_SHA1_DIGEST_SIZE;
    case TPM2_ALG_SHA256:
      return TPM2_SHA256_DIGEST_SIZE;
    case TPM2_ALG_SHA384:
      return TPM2_SHA384_DIGEST_SIZE;
    case TPM2_ALG_SHA512:
      return TPM2_SHA512_DIGEST_SIZE;
    case TPM2_ALG_SM3_256:
      return TPM2_SM3_256_DIGEST_SIZE;
    default:
      return 0;
  }
}

// Every event carries a digest of the right size for every bank, before the TPM is touched:
// a bad input leaves no half-measured PCR.
void check_events(const std::vector<PcrBank>& banks, const std::vector<EventDigests>& events) {
  for (size_t i = 0; i < events.size(); ++i)
    for (const PcrBank& b : banks) {
      const auto it = events[i].find(std::string(b.name));
      if (it == events[i].end())
        throw Error(fmt::format("launch measurement: event {} has no {} digest", i, b.name));
      if (it->second.size() != digest_size(b.alg))
        throw Error(fmt::format("launch measurement: event {} has a {}-byte {} digest", i,
                                it->second.size(), b.name));
    }
}

// The engine back at locality 0 whatever happens: the container's commands follow.
struct LocalityZero {
  TpmEngine& engine;
  ~LocalityZero() { engine.set_locality(0); }
};

std::vector<PcrBank> active_banks(Sapi& sapi, unsigned pcr) {
  const TPML_PCR_SELECTION sel = pcr_allocation(sapi);
  std::vector<PcrBank> banks;
  for (const PcrBank& b : kPcrBanks)  // kPcrBanks is in TPM_ALG_ID order
    for (uint32_t i = 0; i < sel.count; ++i) {
      const TPMS_PCR_SELECTION& s = sel.pcrSelections[i];
      if (s.hash == b.alg && pcr / 8 < s.sizeofSelect && (s.pcrSelect[pcr / 8] >> (pcr % 8) & 1))
        banks.push_back(b);
    }
  return banks;
}

TPML_PCR_SELECTION selection(const std::vector<PcrBank>& banks, unsigned pcr) {
  TPML_PCR_SELECTION sel{};
  for (const PcrBank& b : banks) {
    TPMS_PCR_SELECTION& s = sel.pcrSelections[sel.count++];
    s.hash = b.alg;
    s.sizeofSelect = 3;
    s.pcrSelect[pcr / 8] = static_cast<uint8_t>(1u << (pcr % 8));
  }
  return sel;
}

// 0-15 cannot be reset: after Startup(CLEAR) they read zero, after a resumed Startup(STATE)
// they may not, and a measurement on top of old values could not be replayed from a log.
void require_zero(Sapi& sapi, const std::vector<PcrBank>& banks, unsigned pcr) {
  const TPML_PCR_SELECTION sel = selection(banks, pcr);
  uint32_t counter = 0;
  TPML_PCR_SELECTION sel_out{};
  TPML_DIGEST values{};
  check(Tss2_Sys_PCR_Read(sapi.get(), nullptr, &sel, &counter, &sel_out, &values, nullptr),
        "TPM2_PCR_Read");
  if (values.count != banks.size()) throw Error("TPM2_PCR_Read: fewer banks than selected");
  for (uint32_t i = 0; i < values.count; ++i) {
    const TPM2B_DIGEST& d = values.digests[i];
    if (std::any_of(d.buffer, d.buffer + d.size, [](uint8_t x) { return x != 0; }))
      throw Error(fmt::format(
          "PCR {} is not zero after Startup (resumed TPM state): it cannot hold the launch "
          "measurement",
          pcr));
  }
}

void measure_tpm2(Sapi& sapi, unsigned pcr, const std::vector<PcrBank>& banks,
                  const std::vector<EventDigests>& events) {
  if (resettable(pcr)) {
    check(Tss2_Tcti_SetLocality(sapi.tcti(), kLaunchLocality), "setting locality 2");
    check(Tss2_Sys_PCR_Reset(sapi.get(), pcr, Sapi::password(), nullptr), "TPM2_PCR_Reset");
  } else {
    require_zero(sapi, banks, pcr);
  }
  for (const EventDigests& e : events) {
    TPML_DIGEST_VALUES values{};
    for (const PcrBank& b : banks) {
      TPMT_HA& ha = values.digests[values.count++];
      ha.hashAlg = b.alg;
      const auto& d = e.at(std::string(b.name));
      std::copy(d.begin(), d.end(), reinterpret_cast<uint8_t*>(&ha.digest));
    }
    check(Tss2_Sys_PCR_Extend(sapi.get(), pcr, Sapi::password(), &values, nullptr),
          "TPM2_PCR_Extend");
  }
}

// TPM 1.2 (tpm2-tss has none): hand-built commands, SHA-1 only.
std::vector<uint8_t> run_12(TpmEngine& engine, uint32_t ordinal, std::span<const uint8_t> params,
                            const char* what) {
  auto r = engine.process(proto::command(proto::kTpm12TagRquCommand, ordinal, params));
  check(proto::response_code(r), what);
  return r;
}

void measure_tpm12(TpmEngine& engine, unsigned pcr, const std::vector<EventDigests>& events) {
  std::vector<uint8_t> index;
  proto::put_u32(index, pcr);
  if (resettable(pcr)) {
    engine.set_locality(kLaunchLocality);
    std::vector<uint8_t> sel;  // TPM_PCR_SELECTION: sizeOfSelect, 24 bits
    proto::put_u16(sel, 3);
    sel.insert(sel.end(), {0, 0, 0});
    sel[2 + pcr / 8] = static_cast<uint8_t>(1u << (pcr % 8));
    run_12(engine, proto::kTpm12OrdPcrReset, sel, "TPM_PCR_Reset");
  } else {
    const auto r = run_12(engine, proto::kTpm12OrdPcrRead, index, "TPM_PCRRead");
    if (r.size() < proto::kHeaderSize + TPM2_SHA1_DIGEST_SIZE)
      throw Error("short TPM_PCRRead response");
    if (std::any_of(r.begin() + proto::kHeaderSize, r.end(), [](uint8_t x) { return x != 0; }))
      throw Error(fmt::format(
          "PCR {} is not zero after Startup (resumed TPM state): it cannot hold the launch "
          "measurement",
          pcr));
  }
  for (const EventDigests& e : events) {
    std::vector<uint8_t> params = index;
    const auto& d = e.at("sha1");
    params.insert(params.end(), d.begin(), d.end());
    run_12(engine, proto::kTpm12OrdExtend, params, "TPM_Extend");
  }
}

}  // namespace

CommandHandler::LocalitySink workload_locality_sink(TpmEngine& engine) {
  return [&engine](uint8_t) { engine.set_locality(0); };
}

uint8_t measurement_start_byte(TpmVersion version, unsigned pcr) {
  return version == TpmVersion::V1_2 && resettable(pcr) ? 0xff : 0x00;
}

namespace {

// The banks of `pcr` that a launch measurement extends; Error when pcr is not measurable.
std::vector<PcrBank> launch_pcr_banks(TpmEngine& engine, unsigned pcr) {
  if (!measurable_pcr(pcr))
    throw Error(fmt::format(
        "PCR {} cannot hold the launch measurement (allowed: 0-15 and 20-22; 16 and 23 are "
        "resettable by the container, 17-19 not by the emulator)",
        pcr));
  if (engine.version() != TpmVersion::V2) return {kPcrBanks[0]};  // sha1
  Sapi sapi(engine);
  auto banks = active_banks(sapi, pcr);
  if (banks.empty()) throw Error(fmt::format("PCR {} is in no active bank", pcr));
  return banks;
}

std::vector<std::string> names_of(const std::vector<PcrBank>& banks) {
  std::vector<std::string> names;
  for (const PcrBank& b : banks) names.emplace_back(b.name);
  return names;
}

}  // namespace

std::vector<std::string> launch_banks(TpmEngine& engine, unsigned pcr) {
  return names_of(launch_pcr_banks(engine, pcr));
}

std::vector<std::string> measure_launch(TpmEngine& engine, unsigned pcr,
                                        const std::vector<EventDigests>& events) {
  const std::vector<PcrBank> banks = launch_pcr_banks(engine, pcr);
  check_events(banks, events);
  const LocalityZero at_zero{engine};
  if (engine.version() == TpmVersion::V2) {
    Sapi sapi(engine);
    measure_tpm2(sapi, pcr, banks, events);
  } else {
    measure_tpm12(engine, pcr, events);
  }
  return names_of(banks);
}

}  // namespace vtpm
