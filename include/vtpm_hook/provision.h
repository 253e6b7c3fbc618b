#pragma once
// Makes a TPM what its container asked for, in-process, before it serves anyone.
#include <string>
#include <vector>

#include "vtpm_hook/tpm_engine.h"

namespace vtpm {

// Active PCR banks, by name ("sha1", "sha256", ...). Starts the TPM if needed.
std::vector<std::string> active_pcr_banks(TpmEngine& engine);

// Allocates exactly these banks (all 24 PCRs each) when they differ from the active ones.
// Leaves the TPM reset and waiting for Startup, as after power-on. Throws Error.
void apply_pcr_banks(TpmEngine& engine, const std::vector<std::string>& banks);

}  // namespace vtpm
