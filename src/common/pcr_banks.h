#pragma once
// The PCR banks a vTPM can have: the names configs use and the TPM's algorithm ids.
#include <cstdint>
#include <optional>
#include <string_view>

namespace vtpm {

struct PcrBank {
  std::string_view name;
  uint16_t alg;  // TPM_ALG_*
};

inline constexpr PcrBank kPcrBanks[] = {{"sha1", 0x0004},
                                        {"sha256", 0x000b},
                                        {"sha384", 0x000c},
                                        {"sha512", 0x000d},
                                        {"sm3_256", 0x0012}};

inline std::optional<uint16_t> pcr_bank_alg(std::string_view name) {
  for (const auto& b : kPcrBanks)
    if (b.name == name) return b.alg;
  return std::nullopt;
}

}  // namespace vtpm
