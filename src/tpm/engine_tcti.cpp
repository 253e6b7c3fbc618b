#include "tpm/engine_tcti.h"

#include <cstring>
#include <span>

namespace vtpm {
namespace {
constexpr uint64_t kMagic = 0x7674706d686f6f6bULL;  // "vtpmhook": checked only by us
}  // namespace

static_assert(std::is_standard_layout_v<EngineTcti>, "the TCTI context must start the object");

EngineTcti::EngineTcti(TpmEngine& engine) : engine_(&engine) {
  auto& c = common_.v1;
  c.magic = kMagic;
  c.version = 2;  // V2: makeSticky present
  c.transmit = &transmit;
  c.receive = &receive;
  c.finalize = &finalize;
  c.cancel = &cancel;
  c.getPollHandles = &poll_handles;
  c.setLocality = &set_locality;
  common_.makeSticky = &make_sticky;
}

EngineTcti* EngineTcti::self(TSS2_TCTI_CONTEXT* c) {
  auto* t = reinterpret_cast<EngineTcti*>(c);
  return t && t->common_.v1.magic == kMagic ? t : nullptr;
}

TSS2_RC EngineTcti::transmit(TSS2_TCTI_CONTEXT* c, size_t size, const uint8_t* command) {
  EngineTcti* t = self(c);
  if (!t) return TSS2_TCTI_RC_BAD_CONTEXT;
  if (!command) return TSS2_TCTI_RC_BAD_REFERENCE;
  if (t->pending_) return TSS2_TCTI_RC_BAD_SEQUENCE;  // the last response was not taken
  try {
    t->response_ = t->engine_->process(std::span(command, size));  // libtpms answers at once
  } catch (...) {
    return TSS2_TCTI_RC_MEMORY;  // C callers: nothing may escape
  }
  t->pending_ = true;
  return TSS2_RC_SUCCESS;
}

TSS2_RC EngineTcti::receive(TSS2_TCTI_CONTEXT* c, size_t* size, uint8_t* response, int32_t) {
  EngineTcti* t = self(c);
  if (!t) return TSS2_TCTI_RC_BAD_CONTEXT;
  if (!size) return TSS2_TCTI_RC_BAD_REFERENCE;
  if (!t->pending_) return TSS2_TCTI_RC_BAD_SEQUENCE;
  if (!response) {  // a size query: the response stays for the next call
    *size = t->response_.size();
    return TSS2_RC_SUCCESS;
  }
  if (*size < t->response_.size()) {
    *size = t->response_.size();
    return TSS2_TCTI_RC_INSUFFICIENT_BUFFER;
  }
  std::memcpy(response, t->response_.data(), t->response_.size());
  *size = t->response_.size();
  t->pending_ = false;
  return TSS2_RC_SUCCESS;
}

void EngineTcti::finalize(TSS2_TCTI_CONTEXT*) {}  // the object's owner ends it

TSS2_RC EngineTcti::cancel(TSS2_TCTI_CONTEXT*) { return TSS2_TCTI_RC_NOT_IMPLEMENTED; }

TSS2_RC EngineTcti::poll_handles(TSS2_TCTI_CONTEXT*, TSS2_TCTI_POLL_HANDLE*, size_t*) {
  return TSS2_TCTI_RC_NOT_IMPLEMENTED;  // synchronous: nothing to poll
}

TSS2_RC EngineTcti::set_locality(TSS2_TCTI_CONTEXT* c, uint8_t locality) {
  EngineTcti* t = self(c);
  if (!t) return TSS2_TCTI_RC_BAD_CONTEXT;
  if (t->pending_) return TSS2_TCTI_RC_BAD_SEQUENCE;
  t->engine_->set_locality(locality);
  return TSS2_RC_SUCCESS;
}

TSS2_RC EngineTcti::make_sticky(TSS2_TCTI_CONTEXT*, TPM2_HANDLE*, uint8_t) {
  return TSS2_TCTI_RC_NOT_IMPLEMENTED;
}

}  // namespace vtpm
