#pragma once
// tpm2-tss's SAPI over the in-process engine: the commands the project sends to its own TPM.
// SAPI, not ESAPI: one shared object less in every hook exec (`vtpm-hook --version`, median
// of 300 alternated: natively +0.08 ms with SAPI against +0.48 ms with ESAPI; under TCG +7.6
// against +13.8 ms), and the commands here need nothing ESAPI adds (password sessions only, no
// names to compute, no parameter encryption).
#include <tss2/tss2_sys.h>

#include <memory>

#include "tpm/engine_tcti.h"
#include "tpm/tpm_engine.h"

namespace vtpm {

// One SAPI context on an engine (TPM 2 only).
class Sapi {
 public:
  explicit Sapi(TpmEngine& engine);  // Throws Error.
  ~Sapi();
  Sapi(const Sapi&) = delete;
  Sapi& operator=(const Sapi&) = delete;

  TSS2_SYS_CONTEXT* get() { return ctx_; }
  TSS2_TCTI_CONTEXT* tcti() { return tcti_.get(); }

  // An empty-password session (TPM_RS_PW) for the command's one authorized handle: the
  // hierarchies' and the EK indices' auth values are empty.
  static const TSS2L_SYS_AUTH_COMMAND* password();

 private:
  EngineTcti tcti_;
  std::unique_ptr<std::max_align_t[]> mem_;  // the opaque SAPI context
  TSS2_SYS_CONTEXT* ctx_ = nullptr;
};

// Throws Error("<what> failed with TPM rc 0x<rc>") unless rc is TSS2_RC_SUCCESS. A TPM's own
// answer keeps its number (layer 0); tpm2-tss's errors carry their layer in the high byte.
void check(TSS2_RC rc, const char* what);

// TPM2_GetCapability(TPM_CAP_PCRS): every implemented bank and the PCRs allocated in it.
TPML_PCR_SELECTION pcr_allocation(Sapi& sapi);

}  // namespace vtpm
