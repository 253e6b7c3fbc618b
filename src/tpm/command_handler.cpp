#include "tpm/command_handler.h"

#include "tpm/tpm_proto.h"

namespace vtpm {

CommandHandler::CommandHandler(TpmVersion v, Backend backend, LocalitySink locality,
                               bool accept_vendor)
    : version_(v),
      backend_(std::move(backend)),
      locality_(std::move(locality)),
      accept_vendor_(accept_vendor) {}

std::vector<uint8_t> CommandHandler::handle(std::span<const uint8_t> cmd) {
  const bool v2 = version_ == TpmVersion::V2;
  const auto hdr = proto::parse_header(cmd);
  if (!hdr || hdr->size != cmd.size() || cmd.size() > proto::kMaxCommandSize)
    return proto::make_response(version_,
                                v2 ? proto::kTpm2RcCommandSize : proto::kTpm12BadParamSize);

  if (hdr->code == proto::kVendorSetLocality && accept_vendor_) {
    // The kernel proxy's own command. An error answer here breaks the host driver, so only
    // a malformed one (never sent by the kernel) is refused.
    if (cmd.size() != proto::kHeaderSize + 1)
      return proto::make_response(version_,
                                  v2 ? proto::kTpm2RcCommandSize : proto::kTpm12BadParamSize);
    const uint8_t loc = cmd[proto::kHeaderSize];
    if (loc >= 5)
      return proto::make_response(version_, v2 ? proto::kTpm2RcValue : proto::kTpm12BadParameter);
    locality_(loc);
    return proto::make_response(version_, 0);
  }
  auto resp = backend_(cmd);
  if (resp.size() < proto::kHeaderSize)  // libtpms always answers; guard the framing anyway
    return proto::make_response(version_, proto::failure_rc(version_));
  return resp;
}

}  // namespace vtpm
