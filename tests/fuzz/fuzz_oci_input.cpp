// libFuzzer target: the OCI input path of `vtpm-hook setup`.
//
// The input is "<OCI state>\0<config.json>": the part before the first NUL byte goes to
// parse_oci_state, the rest to parse_bundle_config and then resolve_vtpms. Without a NUL the
// whole input is tried as both. vtpm::Error is the only acceptable failure; any other
// exception, crash or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/error.h"
#include "oci/oci_config.h"
#include "oci/oci_state.h"
#include "oci/vtpm_request.h"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    __builtin_printf("invariant violated: %s\n", what);
    std::abort();
  }
}

bool absolute_clean(const std::string& p) {
  return !p.empty() && p.front() == '/' && p.find('\0') == std::string::npos &&
         p.find('\n') == std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t nul = all.find('\0');
  const std::string_view state_text = nul == std::string_view::npos ? all : all.substr(0, nul);
  const std::string_view config_text = nul == std::string_view::npos ? all : all.substr(nul + 1);

  vtpm::OciState state;
  bool state_ok = false;
  try {
    state = vtpm::parse_oci_state(state_text);
    state_ok = true;
    // What parse_oci_state promises to its callers.
    vtpm::validate_container_id(state.id);
    check(state.id.find('/') == std::string::npos, "id has '/'");
    check(state.id != "." && state.id != "..", "id is . or ..");
    check(absolute_clean(state.bundle), "bundle not absolute/clean");
    check(!state.pid || (*state.pid > 0 && *state.pid <= 4194304), "pid out of range");
  } catch (const vtpm::Error&) {
  }
  if (!state_ok) {  // keep fuzzing the config even when the state half is junk
    state = vtpm::OciState{};
    state.id = "fuzz-c1";
    state.bundle = "/run/bundle";
  }

  try {
    const vtpm::BundleConfig cfg = vtpm::parse_bundle_config(config_text, state.bundle);
    check(!cfg.root_path.empty() && cfg.root_path.front() == '/', "root path not absolute");
    const auto specs =
        vtpm::resolve_vtpms(state, cfg, vtpm::RequestDefaults{"/var/lib/vtpm-hook", {}, {}});
    check(specs.size() <= 8, "more than 8 vtpms");
    for (size_t i = 0; i < specs.size(); ++i) {
      check(specs[i].index == i, "index");
      check(absolute_clean(specs[i].state_path), "statePath not absolute/clean");
      check(specs[i].state_path != "/", "statePath is /");
      for (size_t j = 0; j < i; ++j)
        check(specs[i].state_path != specs[j].state_path, "duplicate statePath");
    }
  } catch (const vtpm::Error&) {
  }
  return 0;
}
