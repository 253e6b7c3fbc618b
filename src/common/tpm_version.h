#pragma once
#include <string>
#include <string_view>

namespace vtpm {

enum class TpmVersion { V1_2, V2 };

inline std::string to_string(TpmVersion v) { return v == TpmVersion::V2 ? "2" : "1.2"; }

}  // namespace vtpm
