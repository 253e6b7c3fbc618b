#pragma once
// Makes a TPM what its container asked for, in-process, before it serves anyone.
#include <cstdint>
#include <string>
#include <vector>

#include "state/state_store.h"
#include "tpm/tpm_engine.h"

namespace vtpm {

struct LocalCa;

// Where the TCG EK Credential Profile puts each EK and its certificate (low range: RSA 2048
// template L-1, ECC P-256 template L-2).
struct EkSlot {
  bool rsa;
  uint32_t persistent_handle, nv_index;
};
inline constexpr EkSlot kEkSlots[] = {{true, 0x81010001, 0x01c00002},
                                      {false, 0x8101000a, 0x01c0000a}};

struct EkCertificate {
  EkSlot slot;
  std::vector<uint8_t> der;
};

// Persistent EKs from the TCG EK templates (RSA 2048, ECC P-256) and their certificates,
// signed by ca, in their NV indices, write-locked for good; a PEM copy in the state directory
// (kEkCertificatesFile). For a new TPM only. Leaves the TPM reset and waiting for Startup;
// returns the certificates. Throws Error.
std::vector<EkCertificate> create_ek_certificates(TpmEngine& engine, const LocalCa& ca,
                                                  const std::string& subject,
                                                  const StateStore& store);

// Startup(CLEAR) and a full self-test (TPM 1.2: TPM_Startup(ST_CLEAR), ContinueSelfTest):
// what the kernel would otherwise do, under its per-command timeouts, while registering.
// TPM 2 with close_platform: then the platform hierarchy is disabled, as firmware closes it.
void power_on(TpmEngine& engine, bool close_platform);

// TPM 2, started: what firmware does before an OS runs (phEnable = NO until the next Startup).
void close_platform_hierarchy(TpmEngine& engine);

// Allocates exactly these banks (all 24 PCRs each) when they differ from the active ones.
// Leaves the TPM reset and waiting for Startup, as after power-on. Throws Error.
void apply_pcr_banks(TpmEngine& engine, const std::vector<std::string>& banks);

// Shutdown(STATE) (1.2: SaveState) before the TPM is torn down: volatile state kept, the
// dictionary-attack counter spared. A TPM that was never started only logs it.
void save_state(TpmEngine& engine);

}  // namespace vtpm
