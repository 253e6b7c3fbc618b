#pragma once
// Strict accessors over untrusted JSON: every failure names the field.
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace vtpm {

nlohmann::json parse_json_object(std::string_view text, const std::string& what);
std::string required_string(const nlohmann::json& obj, const char* key, const std::string& what);
std::optional<std::string> optional_string(const nlohmann::json& obj, const char* key,
                                           const std::string& what);
std::optional<bool> optional_bool(const nlohmann::json& obj, const char* key,
                                  const std::string& what);
std::map<std::string, std::string> string_map(const nlohmann::json& obj, const char* key,
                                              const std::string& what);
// Rejects empty, relative, NUL- or newline-bearing paths.
void check_absolute_path(const std::string& path, const std::string& what);

}  // namespace vtpm
