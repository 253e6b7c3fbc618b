#pragma once
// The parts of <bundle>/config.json that vtpm-hook reads.
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace vtpm {

struct BundleConfig {
  std::string root_path;                // absolute (resolved against the bundle)
  std::optional<nlohmann::json> vtpms;  // linux.vtpms, if present
  std::map<std::string, std::string> annotations;
  nlohmann::json document = {};  // the whole config.json: what a measured launch measures
};

BundleConfig parse_bundle_config(std::string_view json_text, const std::string& bundle);
BundleConfig load_bundle_config(const std::string& bundle);

}  // namespace vtpm
