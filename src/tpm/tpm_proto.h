#pragma once
// TPM wire format: headers, the vtpm proxy's locality command, the few TPM 1.2 commands we send.
#include <libtpms/tpm_error.h>
#include <tss2/tss2_tpm2_types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/big_endian.h"
#include "common/tpm_version.h"

namespace vtpm::proto {

inline constexpr size_t kHeaderSize = 10;
inline constexpr size_t kMaxCommandSize = 4096;  // the kernel's TPM_BUFSIZE

// TPM 2 numbers come from tss2_tpm2_types.h, TPM 1.2 return codes from libtpms' tpm_error.h.
inline constexpr uint16_t kTpm2StNoSessions = TPM2_ST_NO_SESSIONS;
inline constexpr uint16_t kTpm2StSessions = TPM2_ST_SESSIONS;
// TPM 1.2 tags, ordinals and startup types: TPM Main Part 2, which no installed header carries.
inline constexpr uint16_t kTpm12TagRquCommand = 0x00C1;        // TPM_TAG_RQU_COMMAND
inline constexpr uint16_t kTpm12TagRspCommand = 0x00C4;        // TPM_TAG_RSP_COMMAND
inline constexpr uint32_t kTpm12OrdExtend = 0x0014;            // TPM_ORD_Extend
inline constexpr uint32_t kTpm12OrdPcrRead = 0x0015;           // TPM_ORD_PcrRead
inline constexpr uint32_t kTpm12OrdContinueSelfTest = 0x0053;  // TPM_ORD_ContinueSelfTest
inline constexpr uint32_t kTpm12OrdSaveState = 0x0098;         // TPM_ORD_SaveState
inline constexpr uint32_t kTpm12OrdStartup = 0x0099;           // TPM_ORD_Startup
inline constexpr uint32_t kTpm12OrdPcrReset = 0x00C8;          // TPM_ORD_PCR_Reset
inline constexpr uint16_t kTpm12StClear = 0x0001;              // TPM_ST_CLEAR
inline constexpr uint16_t kTpm12StState = 0x0002;              // TPM_ST_STATE

// Sent by tpm_vtpm_proxy itself (never by a client): one byte, the locality.
inline constexpr uint32_t kVendorSetLocality = 0x20001000;

inline constexpr uint32_t kTpm2RcSuccess = TPM2_RC_SUCCESS;
inline constexpr uint32_t kTpm2RcCommandSize = TPM2_RC_COMMAND_SIZE;
inline constexpr uint32_t kTpm2RcValue = TPM2_RC_VALUE;  // parameter unmarked
inline constexpr uint32_t kTpm2RcFailure = TPM2_RC_FAILURE;
inline constexpr uint32_t kTpm12Fail = TPM_FAIL;
inline constexpr uint32_t kTpm12BadParamSize = TPM_BAD_PARAM_SIZE;
inline constexpr uint32_t kTpm12BadParameter = TPM_BAD_PARAMETER;
inline constexpr uint32_t kTpm12InvalidPostinit = TPM_INVALID_POSTINIT;  // started already

struct Header {
  uint16_t tag;
  uint32_t size;
  uint32_t code;  // ordinal for a command, return code for a response
};

// nullopt when fewer than kHeaderSize bytes.
std::optional<Header> parse_header(std::span<const uint8_t> bytes);

// A header-only response carrying rc, in the family (1.2 or 2) of the version.
std::vector<uint8_t> make_response(TpmVersion v, uint32_t rc);

// The "TPM failed" return code of the version's family.
constexpr uint32_t failure_rc(TpmVersion v) {
  return v == TpmVersion::V2 ? kTpm2RcFailure : kTpm12Fail;
}

// A command: tag, ordinal and parameters, with the size field filled in.
std::vector<uint8_t> command(uint16_t tag, uint32_t ordinal, std::span<const uint8_t> params);

// The response code of a response (TPM_RC_FAILURE/TPM_FAIL-like 0x101 when malformed).
uint32_t response_code(std::span<const uint8_t> response);

// Startup and Shutdown(STATE) / SaveState as bytes: the emulator sends the TPM 1.2 ones (tpm2-tss
// has no 1.2; its TPM 2 commands go through SAPI, tpm/sapi.h), tests and fuzzers both.
std::vector<uint8_t> startup_command(TpmVersion v, bool clear);  // TPM2_Startup / TPM_Startup
std::vector<uint8_t> shutdown_state_command(TpmVersion v);       // Shutdown(STATE) / SaveState

}  // namespace vtpm::proto
