#pragma once
// The PCR banks a vTPM can have: the names configs use and the TPM's algorithm ids.
#include <tss2/tss2_tpm2_types.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace vtpm {

struct PcrBank {
  std::string_view name;
  uint16_t alg;  // TPM_ALG_*
};

inline constexpr PcrBank kPcrBanks[] = {{"sha1", TPM2_ALG_SHA1},
                                        {"sha256", TPM2_ALG_SHA256},
                                        {"sha384", TPM2_ALG_SHA384},
                                        {"sha512", TPM2_ALG_SHA512},
                                        {"sm3_256", TPM2_ALG_SM3_256}};

inline std::optional<uint16_t> pcr_bank_alg(std::string_view name) {
  for (const auto& b : kPcrBanks)
    if (b.name == name) return b.alg;
  return std::nullopt;
}

// The PCRs a container's launch may be measured into: 0-15 (nothing resets them; they must read
// zeros after Startup) and 20-22 (reset and extended at locality 2 only, which a container never
// reaches). Not 16 and 23 (the workload can reset them at locality 0), nor 17-19 (only a
// dynamic launch resets them).
constexpr bool measurable_pcr(uint64_t pcr) { return pcr <= 15 || (pcr >= 20 && pcr <= 22); }

}  // namespace vtpm
