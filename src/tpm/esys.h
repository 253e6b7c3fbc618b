#pragma once
// ESAPI (tpm2-tss) over the in-process engine: the commands the project sends to its own TPM.
#include <tss2/tss2_esys.h>

#include <memory>

#include "tpm/engine_tcti.h"
#include "tpm/tpm_engine.h"

namespace vtpm {

// One ESAPI context on an engine (TPM 2 only). A power cycle (TpmEngine::reset) invalidates
// the ESYS_TR objects of the TPM's own: use a new Esys after it.
class Esys {
 public:
  explicit Esys(TpmEngine& engine);  // Throws Error.
  ~Esys();
  Esys(const Esys&) = delete;
  Esys& operator=(const Esys&) = delete;

  ESYS_CONTEXT* get() { return ctx_; }
  TSS2_TCTI_CONTEXT* tcti() { return tcti_.get(); }

 private:
  EngineTcti tcti_;
  ESYS_CONTEXT* ctx_ = nullptr;
};

// Throws Error("<what> failed with TPM rc 0x<rc>") unless rc is TSS2_RC_SUCCESS. A TPM's own
// answer keeps its number (layer 0); tpm2-tss's errors carry their layer in the high byte.
void check(TSS2_RC rc, const char* what);

// An output ESAPI allocated, freed with Esys_Free.
struct EsysFree {
  void operator()(void* p) const { Esys_Free(p); }
};
template <typename T>
using EsysPtr = std::unique_ptr<T, EsysFree>;

}  // namespace vtpm
