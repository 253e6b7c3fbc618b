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

}  // namespace vtpm
