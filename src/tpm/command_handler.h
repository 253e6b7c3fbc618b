#pragma once
// Everything in front of libtpms: framing checks and the proxy's locality command.
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "common/tpm_version.h"

namespace vtpm {

class CommandHandler {
 public:
  using Backend = std::function<std::vector<uint8_t>(std::span<const uint8_t>)>;
  using LocalitySink = std::function<void(uint8_t)>;

  // accept_vendor: only the kernel proxy may change the locality; a stream client may not.
  CommandHandler(TpmVersion v, Backend backend, LocalitySink locality, bool accept_vendor);

  // Always returns one complete response, never throws for bad commands.
  std::vector<uint8_t> handle(std::span<const uint8_t> command);

 private:
  TpmVersion version_;
  Backend backend_;
  LocalitySink locality_;
  bool accept_vendor_;
};

}  // namespace vtpm
