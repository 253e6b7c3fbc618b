#pragma once
// `vtpm-hook emulate`: one TPM on stdin/stdout (a raw command/response stream), for the cmd
// TCTI of tpm2-tools and for tests. Run by an administrator, not for containers.
#include <optional>
#include <string>
#include <vector>

#include "common/tpm_version.h"
#include "state/state_key.h"

namespace vtpm {

struct LocalCa;

struct StreamOptions {
  std::string state_dir;
  TpmVersion version = TpmVersion::V2;
  bool startup = true;
  bool close_platform = false;  // after Startup, as the hook's emulators do (TPM 2)
  std::vector<std::string> pcr_banks;
  std::optional<StateKey> key;
  const LocalCa* ca = nullptr;  // create EKs and certificates on a new TPM
};

// The body of `vtpm-hook emulate`: serves stdin/stdout until EOF or SIGTERM. Returns 0.
int run_stream_emulator(const StreamOptions& opts);

}  // namespace vtpm
