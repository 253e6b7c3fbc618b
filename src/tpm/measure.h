#pragma once
// The measured launch (issue 20): the emulator extends what the hook measured into one PCR
// before the container's device exists.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tpm/command_handler.h"
#include "tpm/tpm_engine.h"

namespace vtpm {

using EventDigests =
    std::map<std::string, std::vector<uint8_t>>;  // bank name (common/pcr_banks.h) -> digest

// After power_on: starts `pcr` from zeros (20-22: PCR_Reset at locality 2; 0-15: must read all
// zeros, else Error "resumed TPM state") and extends each event's digest into every active
// bank of that PCR (TPM 2: PCR_Extend with one TPMT_HA per active bank, at locality 2 for 20-22;
// TPM 1.2: TPM_PCR_Reset + TPM_Extend, SHA-1 only, locality 2). Locality back to 0 always.
// TPM 1.2 PCRs 20-22 start from all ones instead: see measurement_start_byte.
// Returns the banks extended, TPM_ALG_ID order (names of kPcrBanks). Error if an active bank
// has no digest in an event, or pcr is not measurable.
std::vector<std::string> measure_launch(TpmEngine& engine, unsigned pcr,
                                        const std::vector<EventDigests>& events);

// The banks measure_launch extends (names, TPM_ALG_ID order): the events need their digests.
// Error as measure_launch for a PCR that is not measurable or in no active bank.
std::vector<std::string> launch_banks(TpmEngine& engine, unsigned pcr);

// Every byte of `pcr` before the first event, where a verifier's replay starts: 0x00, except
// TPM 1.2 PCRs 20-22, 0xFF: TPM 1.2's TPM_PCR_Reset sets them to all ones outside a dynamic
// launch (PC Client 1.2; libtpms, TOSPresent false), while TPM 2's PCR_Reset gives zeros.
uint8_t measurement_start_byte(TpmVersion version, unsigned pcr);

// The emulator's sink for the proxy's locality command (CommandHandler): every request is
// answered with success but the engine stays at locality 0. Linux asks for 0 for every chip;
// kernels that ask for more (TrenchBoot Secure Launch, patches letting userspace choose) still
// give the container no way to reach 2, so it cannot reset or extend PCRs 20-22.
CommandHandler::LocalitySink workload_locality_sink(TpmEngine& engine);

}  // namespace vtpm
