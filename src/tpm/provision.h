#pragma once
// Makes a TPM what its container asked for, in-process, before it serves anyone.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "state/state_store.h"
#include "tpm/tpm_engine.h"

namespace vtpm {

struct LocalCa;
struct EkPublic;

// A DER certificate for an EK's public key (ca_signer.h: the CA's key is in another process).
using EkSigner = std::function<std::vector<uint8_t>(const EkPublic&)>;

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
// made by sign, in their NV indices, write-locked for good; a PEM copy in the state directory
// (kEkCertificatesFile). For a new TPM only. Leaves the TPM reset and waiting for Startup;
// returns the certificates. Throws Error.
std::vector<EkCertificate> create_ek_certificates(TpmEngine& engine, const EkSigner& sign,
                                                  const StateStore& store);
// The same, signed in this process by ca, with `subject` (the stdin/stdout emulator).
std::vector<EkCertificate> create_ek_certificates(TpmEngine& engine, const LocalCa& ca,
                                                  const std::string& subject,
                                                  const StateStore& store);

// createCerts: a new TPM manufactured in store, its PCR banks set (when pcr_banks is not
// empty), its EKs and certificates made. Refuses (Error, nothing written) when store already
// holds any TPM state (permall, volatilestate, savestate): such files are checked here, under
// the store's lock, before libtpms reads a byte, because whoever can write the state dir (a
// compromised emulator, the runAs user) could plant a TPM whose seeds they know and have the
// CA certify its EKs, or state crafted to exploit libtpms's unmarshalling. Throws Error.
std::vector<EkCertificate> provision_new_tpm(const StateStore& store,
                                             const std::vector<std::string>& pcr_banks,
                                             const EkSigner& sign);

// Startup(CLEAR) and a full self-test (TPM 1.2: TPM_Startup(ST_CLEAR), ContinueSelfTest):
// what the kernel would otherwise do, under its per-command timeouts, while registering.
// TPM 2 with close_platform: then the platform hierarchy is disabled, as firmware closes it.
// resume: Startup(STATE) instead (a container restored from a checkpoint), CLEAR where the
// state holds nothing to resume (logged). TPM 2 without full_self_test: no self-test here
// (the self-test on demand, tpm/self_test.h).
void power_on(TpmEngine& engine, bool close_platform, bool resume = false,
              bool full_self_test = true);

// TPM 2, started: what firmware does before an OS runs (phEnable = NO until the next Startup).
void close_platform_hierarchy(TpmEngine& engine);

// Allocates exactly these banks (all 24 PCRs each) when they differ from the active ones.
// Leaves the TPM reset and waiting for Startup, as after power-on. Throws Error.
void apply_pcr_banks(TpmEngine& engine, const std::vector<std::string>& banks);

// Shutdown(STATE) (1.2: SaveState) before the TPM is torn down: volatile state kept, the
// dictionary-attack counter spared. A TPM that was never started only logs it.
void save_state(TpmEngine& engine);

}  // namespace vtpm
