#include "oci/oci_config.h"

#include <fcntl.h>

#include <filesystem>

#include "common/error.h"
#include "common/io_util.h"
#include "oci/json_util.h"

namespace vtpm {

BundleConfig parse_bundle_config(std::string_view json_text, const std::string& bundle) {
  const std::string what = bundle + "/config.json";
  const auto doc = parse_json_object(json_text, what);
  BundleConfig cfg;

  auto root = doc.find("root");
  if (root == doc.end() || !root->is_object()) throw Error(what + ": \"root\" is missing");
  std::string path = required_string(*root, "path", what + ": root");
  if (path.empty() || path.find('\0') != std::string::npos || path.find('\n') != std::string::npos)
    throw Error(what + ": \"root.path\" is empty or has a NUL or newline");
  std::filesystem::path p(path);
  if (p.is_relative()) p = std::filesystem::path(bundle) / p;
  cfg.root_path = p.lexically_normal().string();
  if (cfg.root_path.size() > 1 && cfg.root_path.back() == '/') cfg.root_path.pop_back();

  cfg.annotations = string_map(doc, "annotations", what);
  if (auto linux = doc.find("linux"); linux != doc.end() && linux->is_object()) {
    if (auto v = linux->find("vtpms"); v != linux->end() && !v->is_null()) cfg.vtpms = *v;
  }
  cfg.document = doc;
  return cfg;
}

BundleConfig load_bundle_config(const std::string& bundle) {
  const std::string path = bundle + "/config.json";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) throw sys_error("cannot read " + path);
  return parse_bundle_config(read_all(fd.get(), 16u << 20, path), bundle);
}

}  // namespace vtpm
