#pragma once
// A TCTI (tpm2-tss's transport interface) over the in-process engine: SAPI commands go
// straight to libtpms, synchronously, with no device or socket in between.
#include <tss2/tss2_tcti.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "tpm/tpm_engine.h"

namespace vtpm {

class EngineTcti {
 public:
  explicit EngineTcti(TpmEngine& engine);
  EngineTcti(const EngineTcti&) = delete;
  EngineTcti& operator=(const EngineTcti&) = delete;

  // What Tss2_Sys_Initialize and the Tss2_Tcti_* macros take. Valid while this object lives.
  TSS2_TCTI_CONTEXT* get() { return reinterpret_cast<TSS2_TCTI_CONTEXT*>(this); }

 private:
  static EngineTcti* self(TSS2_TCTI_CONTEXT* c);
  static TSS2_RC transmit(TSS2_TCTI_CONTEXT* c, size_t size, const uint8_t* command);
  static TSS2_RC receive(TSS2_TCTI_CONTEXT* c, size_t* size, uint8_t* response, int32_t timeout);
  static void finalize(TSS2_TCTI_CONTEXT* c);
  static TSS2_RC cancel(TSS2_TCTI_CONTEXT* c);
  static TSS2_RC poll_handles(TSS2_TCTI_CONTEXT* c, TSS2_TCTI_POLL_HANDLE* h, size_t* n);
  static TSS2_RC set_locality(TSS2_TCTI_CONTEXT* c, uint8_t locality);
  static TSS2_RC make_sticky(TSS2_TCTI_CONTEXT* c, TPM2_HANDLE* handle, uint8_t sticky);

  // tpm2-tss reads the function table at the context's address: this must be the first member.
  TSS2_TCTI_CONTEXT_COMMON_V2 common_{};
  TpmEngine* engine_;
  std::vector<uint8_t> response_;
  bool pending_ = false;  // a response is waiting for receive
};

}  // namespace vtpm
