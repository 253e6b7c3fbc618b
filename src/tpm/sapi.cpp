#include "tpm/sapi.h"

#include <spdlog/fmt/fmt.h>

#include "common/error.h"

namespace vtpm {

Sapi::Sapi(TpmEngine& engine) : tcti_(engine) {
  if (engine.version() != TpmVersion::V2) throw Error("tpm2-tss speaks TPM 2 only");
  const size_t size = Tss2_Sys_GetContextSize(0);  // 0: the default command/response size
  mem_.reset(
      new std::max_align_t[(size + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t)]);
  ctx_ = reinterpret_cast<TSS2_SYS_CONTEXT*>(mem_.get());
  TSS2_ABI_VERSION abi = TSS2_ABI_VERSION_CURRENT;
  if (const TSS2_RC rc = Tss2_Sys_Initialize(ctx_, size, tcti_.get(), &abi);
      rc != TSS2_RC_SUCCESS) {
    ctx_ = nullptr;
    check(rc, "Tss2_Sys_Initialize");
  }
}

Sapi::~Sapi() {
  if (ctx_) Tss2_Sys_Finalize(ctx_);  // leaves the TCTI to us
}

const TSS2L_SYS_AUTH_COMMAND* Sapi::password() {
  static const TSS2L_SYS_AUTH_COMMAND auth = [] {
    TSS2L_SYS_AUTH_COMMAND a{};
    a.count = 1;
    a.auths[0].sessionHandle = TPM2_RS_PW;  // empty nonce, no attributes, empty password
    return a;
  }();
  return &auth;
}

void check(TSS2_RC rc, const char* what) {
  if (rc != TSS2_RC_SUCCESS) throw Error(fmt::format("{} failed with TPM rc 0x{:x}", what, rc));
}

TPML_PCR_SELECTION pcr_allocation(Sapi& sapi) {
  TPMI_YES_NO more = TPM2_NO;
  TPMS_CAPABILITY_DATA data{};
  check(Tss2_Sys_GetCapability(sapi.get(), nullptr, TPM2_CAP_PCRS, 0, 1, &more, &data, nullptr),
        "TPM2_GetCapability(PCRS)");
  return data.data.assignedPCR;
}

}  // namespace vtpm
