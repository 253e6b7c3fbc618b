#pragma once
// The only module that talks to libtpms. libtpms is global state: one engine per process.
#include <cstdint>
#include <span>
#include <vector>

#include "common/tpm_version.h"
#include "state/state_store.h"

namespace vtpm {

// TPMLIB_GetVersion(): 0x000906 for libtpms 0.9.6.
uint32_t libtpms_version();

// After a fork from a process whose generators were already seeded (the template): fresh seeds
// for OpenSSL's generators, which libtpms draws on. Throws Error.
void reseed_random();

class TpmEngine {
 public:
  // Loads state from the store (or manufactures a new TPM). Throws Error.
  explicit TpmEngine(const StateStore& store);
  ~TpmEngine();
  TpmEngine(const TpmEngine&) = delete;
  TpmEngine& operator=(const TpmEngine&) = delete;

  TpmVersion version() const { return version_; }
  std::vector<uint8_t> process(std::span<const uint8_t> command);
  void set_locality(uint8_t locality);
  // _TPM_Init: a power cycle. The TPM reloads its state and waits for Startup.
  void reset();

 private:
  TpmVersion version_;
};

}  // namespace vtpm
