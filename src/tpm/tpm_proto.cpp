#include "tpm/tpm_proto.h"

namespace vtpm::proto {

std::optional<Header> parse_header(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) return std::nullopt;
  return Header{get_u16(bytes, 0), get_u32(bytes, 2), get_u32(bytes, 6)};
}

std::vector<uint8_t> command(uint16_t tag, uint32_t ordinal, std::span<const uint8_t> params) {
  std::vector<uint8_t> out;
  put_u16(out, tag);
  put_u32(out, static_cast<uint32_t>(kHeaderSize + params.size()));
  put_u32(out, ordinal);
  out.insert(out.end(), params.begin(), params.end());
  return out;
}

uint32_t response_code(std::span<const uint8_t> response) {
  const auto h = parse_header(response);
  return h ? h->code : kTpm2RcFailure;
}

std::vector<uint8_t> make_response(TpmVersion v, uint32_t rc) {
  std::vector<uint8_t> out;
  put_u16(out, v == TpmVersion::V2 ? kTpm2StNoSessions : kTpm12TagRspCommand);
  put_u32(out, kHeaderSize);
  put_u32(out, rc);
  return out;
}

std::vector<uint8_t> startup_command(TpmVersion v, bool clear) {
  std::vector<uint8_t> type;
  if (v == TpmVersion::V2) {
    put_u16(type, clear ? TPM2_SU_CLEAR : TPM2_SU_STATE);
    return command(kTpm2StNoSessions, TPM2_CC_Startup, type);
  }
  put_u16(type, clear ? kTpm12StClear : kTpm12StState);
  return command(kTpm12TagRquCommand, kTpm12OrdStartup, type);
}

std::vector<uint8_t> shutdown_state_command(TpmVersion v) {
  if (v == TpmVersion::V2) {
    std::vector<uint8_t> type;
    put_u16(type, TPM2_SU_STATE);
    return command(kTpm2StNoSessions, TPM2_CC_Shutdown, type);
  }
  return command(kTpm12TagRquCommand, kTpm12OrdSaveState, {});
}

}  // namespace vtpm::proto
