#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace vtpm {

enum class TpmVersion { V1_2, V2 };

inline std::string to_string(TpmVersion v) { return v == TpmVersion::V2 ? "2" : "1.2"; }

// "2" (or "2.0") and "1.2"; nullopt for anything else. The one parser of every input that
// names a TPM version (config, annotations, run records, the command line).
inline std::optional<TpmVersion> parse_tpm_version(std::string_view s) {
  if (s == "2" || s == "2.0") return TpmVersion::V2;
  if (s == "1.2") return TpmVersion::V1_2;
  return std::nullopt;
}

}  // namespace vtpm
