#include "vtpm_hook/provision.h"

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <map>

#include "vtpm_hook/error.h"
#include "vtpm_hook/tpm_proto.h"

namespace vtpm {
namespace {

constexpr uint32_t kRcInitialize = 0x100;
constexpr uint32_t kRhPlatform = 0x4000000C;
constexpr uint32_t kCcPcrAllocate = 0x12B;
constexpr uint32_t kCcGetCapability = 0x17A;

const std::map<std::string, uint16_t> kBankAlg = {{"sha1", 0x0004},
                                                  {"sha256", 0x000b},
                                                  {"sha384", 0x000c},
                                                  {"sha512", 0x000d},
                                                  {"sm3_256", 0x0012}};

std::string bank_name(uint16_t alg) {
  for (const auto& [name, id] : kBankAlg)
    if (id == alg) return name;
  return "alg-" + std::to_string(alg);
}

struct Bank {
  uint16_t alg;
  bool active;
};

void check_rc(const std::vector<uint8_t>& resp, const std::string& what) {
  if (const uint32_t rc = proto::response_code(resp); rc != 0)
    throw Error(fmt::format("{} failed with TPM rc 0x{:x}", what, rc));
}

void ensure_started(TpmEngine& engine) {
  const auto r = engine.process(proto::startup_command(TpmVersion::V2, /*clear=*/true));
  const uint32_t rc = proto::response_code(r);
  if (rc != 0 && rc != kRcInitialize) check_rc(r, "TPM2_Startup");  // INITIALIZE: already up
}

// TPM2_GetCapability(TPM_CAP_PCRS): every implemented bank, active or not.
std::vector<Bank> read_banks(TpmEngine& engine) {
  std::vector<uint8_t> cmd;
  proto::put_u16(cmd, proto::kTpm2StNoSessions);
  proto::put_u32(cmd, 22);
  proto::put_u32(cmd, kCcGetCapability);
  proto::put_u32(cmd, 5);  // TPM_CAP_PCRS
  proto::put_u32(cmd, 0);
  proto::put_u32(cmd, 1);
  const auto r = engine.process(cmd);
  check_rc(r, "TPM2_GetCapability(PCRS)");
  // header, moreData (1), capability (4), TPML_PCR_SELECTION
  size_t off = proto::kHeaderSize + 1 + 4;
  const std::span<const uint8_t> b(r);
  if (b.size() < off + 4) throw Error("short TPM2_GetCapability(PCRS) response");
  const uint32_t count = proto::get_u32(b, off);
  off += 4;
  std::vector<Bank> banks;
  for (uint32_t i = 0; i < count; ++i) {
    if (b.size() < off + 3) throw Error("short TPM2_GetCapability(PCRS) response");
    const uint16_t alg = proto::get_u16(b, off);
    const uint8_t n = b[off + 2];
    off += 3;
    if (b.size() < off + n) throw Error("short TPM2_GetCapability(PCRS) response");
    const bool active =
        std::any_of(b.begin() + off, b.begin() + off + n, [](uint8_t x) { return x; });
    off += n;
    banks.push_back({alg, active});
  }
  return banks;
}

}  // namespace

std::vector<std::string> active_pcr_banks(TpmEngine& engine) {
  ensure_started(engine);
  std::vector<std::string> out;
  for (const auto& b : read_banks(engine))
    if (b.active) out.push_back(bank_name(b.alg));
  return out;
}

void apply_pcr_banks(TpmEngine& engine, const std::vector<std::string>& wanted) {
  ensure_started(engine);
  const auto banks = read_banks(engine);
  bool same = true;
  for (const auto& name : wanted) {
    const auto alg = kBankAlg.at(name);
    if (std::none_of(banks.begin(), banks.end(), [&](const Bank& b) { return b.alg == alg; }))
      throw Error("this TPM does not implement PCR bank " + name);
  }
  std::vector<uint8_t> sel;
  proto::put_u32(sel, static_cast<uint32_t>(banks.size()));
  for (const auto& b : banks) {
    const bool want = std::any_of(wanted.begin(), wanted.end(),
                                  [&](const std::string& n) { return kBankAlg.at(n) == b.alg; });
    same &= want == b.active;
    proto::put_u16(sel, b.alg);
    sel.push_back(3);  // 24 PCRs
    for (int i = 0; i < 3; ++i) sel.push_back(want ? 0xff : 0x00);
  }
  if (!same) {
    check_rc(engine.process(
                 proto::password_session_command(kCcPcrAllocate, std::array{kRhPlatform}, sel)),
             "TPM2_PCR_Allocate");
    spdlog::info("PCR banks allocated: {}", fmt::join(wanted, ","));
  }
  // A new allocation takes effect at the next TPM reset: power-cycle now, so the first Startup
  // (the kernel's or ours) sees it.
  check_rc(engine.process(proto::shutdown_command(TpmVersion::V2, /*clear=*/true)),
           "TPM2_Shutdown");
  engine.reset();
}

}  // namespace vtpm
