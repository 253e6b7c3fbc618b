#include "tpm/esys.h"

#include <spdlog/fmt/fmt.h>

#include <cstdlib>

#include "common/error.h"

namespace vtpm {

Esys::Esys(TpmEngine& engine) : tcti_(engine) {
  if (engine.version() != TpmVersion::V2) throw Error("tpm2-tss speaks TPM 2 only");
  // tpm2-tss logs its errors and warnings to stderr, read from TSS2_LOG at its first message:
  // off, since check() reports each failure in one line (and an expected TPM_RC_INITIALIZE is
  // no warning). A TSS2_LOG the user set is kept, for debugging.
  (void)::setenv("TSS2_LOG", "all+none", /*overwrite=*/0);
  check(Esys_Initialize(&ctx_, tcti_.get(), nullptr), "Esys_Initialize");
}

Esys::~Esys() { Esys_Finalize(&ctx_); }  // leaves the TCTI to us

void check(TSS2_RC rc, const char* what) {
  if (rc != TSS2_RC_SUCCESS) throw Error(fmt::format("{} failed with TPM rc 0x{:x}", what, rc));
}

}  // namespace vtpm
