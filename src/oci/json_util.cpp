#include "oci/json_util.h"

#include "common/error.h"

namespace vtpm {

nlohmann::json parse_json_object(std::string_view text, const std::string& what) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) throw Error(what + " is empty");
  // Deep nesting is never legitimate here, and copying a deep tree recurses.
  constexpr int kMaxDepth = 32;
  bool too_deep = false;
  nlohmann::json doc = nlohmann::json::parse(
      text,
      [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
        if (depth > kMaxDepth) too_deep = true;
        return !too_deep;
      },
      /*allow_exceptions=*/false);
  if (too_deep)
    throw Error(what + " is nested deeper than " + std::to_string(kMaxDepth) + " levels");
  if (doc.is_discarded()) throw Error(what + " is not valid JSON");
  if (!doc.is_object()) throw Error(what + " is not a JSON object");
  return doc;
}

std::optional<std::string> optional_string(const nlohmann::json& obj, const char* key,
                                           const std::string& what) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw Error(what + ": \"" + key + "\" is not a string");
  return it->get<std::string>();
}

std::string required_string(const nlohmann::json& obj, const char* key, const std::string& what) {
  auto v = optional_string(obj, key, what);
  if (!v) throw Error(what + ": \"" + key + "\" is missing");
  return *v;
}

std::optional<bool> optional_bool(const nlohmann::json& obj, const char* key,
                                  const std::string& what) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) throw Error(what + ": \"" + key + "\" is not a boolean");
  return it->get<bool>();
}

std::map<std::string, std::string> string_map(const nlohmann::json& obj, const char* key,
                                              const std::string& what) {
  std::map<std::string, std::string> out;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_object()) throw Error(what + ": \"" + key + "\" is not an object");
  for (const auto& [k, v] : it->items()) {
    if (!v.is_string()) throw Error(what + ": \"" + key + "." + k + "\" is not a string");
    out.emplace(k, v.get<std::string>());
  }
  return out;
}

void check_absolute_path(const std::string& path, const std::string& what) {
  if (path.empty()) throw Error(what + " is empty");
  if (path.find('\0') != std::string::npos) throw Error(what + " contains a NUL byte");
  if (path.find('\n') != std::string::npos) throw Error(what + " contains a newline");
  if (path.front() != '/') throw Error(what + " is not an absolute path: " + path);
  if (path.size() > 4000) throw Error(what + " is longer than 4000 characters");
}

}  // namespace vtpm
