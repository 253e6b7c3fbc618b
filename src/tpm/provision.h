#pragma once
// Makes a TPM what its container asked for, in-process, before it serves anyone.
#include <string>
#include <vector>

#include "tpm/tpm_engine.h"

namespace vtpm {

struct LocalCa;

// Persistent EKs from the TCG EK templates (RSA 2048 at 0x81010001, ECC P-256 at 0x8101000a)
// and their certificates, signed by ca, in NV 0x01c00002 / 0x01c0000a. For a new TPM only.
// Leaves the TPM reset and waiting for Startup. Throws Error.
void create_ek_certificates(TpmEngine& engine, const LocalCa& ca, const std::string& subject);

// Startup(CLEAR) and a full self-test (TPM 1.2: TPM_Startup(ST_CLEAR), ContinueSelfTest):
// what the kernel would otherwise do, under its per-command timeouts, while registering.
void power_on(TpmEngine& engine);

// Allocates exactly these banks (all 24 PCRs each) when they differ from the active ones.
// Leaves the TPM reset and waiting for Startup, as after power-on. Throws Error.
void apply_pcr_banks(TpmEngine& engine, const std::vector<std::string>& banks);

// Shutdown(STATE) (1.2: SaveState) before the TPM is torn down: volatile state kept, the
// dictionary-attack counter spared. A TPM that was never started only logs it.
void save_state(TpmEngine& engine);

}  // namespace vtpm
