#include "tpm/tpm_engine.h"

#include <libtpms/tpm_error.h>
#include <libtpms/tpm_library.h>
#include <libtpms/tpm_memory.h>
#include <openssl/rand.h>

#include <cstring>

#include "common/error.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

// libtpms calls back into plain functions: these are the engine's only globals.
const StateStore* g_store = nullptr;
uint8_t g_locality = 0;
bool g_engine_live = false;
std::string g_last_error;

TPM_RESULT cb_nvram_init() { return TPM_SUCCESS; }

TPM_RESULT cb_load(unsigned char** data, uint32_t* length, uint32_t, const char* name) {
  *data = nullptr;
  *length = 0;
  try {
    auto blob = g_store->load(name);
    if (!blob) return TPM_RETRY;  // libtpms' "does not exist"
    if (TPM_Malloc(data, static_cast<uint32_t>(blob->size())) != TPM_SUCCESS) return TPM_FAIL;
    std::memcpy(*data, blob->data(), blob->size());
    *length = static_cast<uint32_t>(blob->size());
    return TPM_SUCCESS;
  } catch (const std::exception& e) {
    g_last_error = e.what();
    return TPM_FAIL;
  }
}

TPM_RESULT cb_store(const unsigned char* data, uint32_t length, uint32_t, const char* name) {
  try {
    g_store->store(name, std::span<const uint8_t>(data, length));
    return TPM_SUCCESS;
  } catch (const std::exception& e) {
    g_last_error = e.what();
    return TPM_FAIL;
  }
}

TPM_RESULT cb_delete(uint32_t, const char* name, TPM_BOOL) {
  try {
    g_store->remove(name);
    return TPM_SUCCESS;
  } catch (const std::exception& e) {
    g_last_error = e.what();
    return TPM_FAIL;
  }
}

TPM_RESULT cb_io_init() { return TPM_SUCCESS; }

TPM_RESULT cb_locality(TPM_MODIFIER_INDICATOR* loc, uint32_t) {
  *loc = g_locality;
  return TPM_SUCCESS;
}

TPM_RESULT cb_physical_presence(TPM_BOOL* pp, uint32_t) {
  *pp = FALSE;
  return TPM_SUCCESS;
}

}  // namespace

void reseed_random() {
  if (RAND_poll() != 1) throw Error("cannot reseed the random number generator");
}

TpmEngine::TpmEngine(const StateStore& store) : version_(store.version()) {
  if (g_engine_live) throw Error("libtpms allows one TPM per process");
  g_store = &store;
  g_last_error.clear();
  g_locality = 0;  // a new TPM: whatever the last engine of this process was left at
  if (TPMLIB_ChooseTPMVersion(version_ == TpmVersion::V2 ? TPMLIB_TPM_VERSION_2
                                                         : TPMLIB_TPM_VERSION_1_2) != TPM_SUCCESS)
    throw Error("libtpms does not support TPM " + to_string(version_));
  struct libtpms_callbacks cbs {};
  cbs.sizeOfStruct = sizeof cbs;
  cbs.tpm_nvram_init = cb_nvram_init;
  cbs.tpm_nvram_loaddata = cb_load;
  cbs.tpm_nvram_storedata = cb_store;
  cbs.tpm_nvram_deletename = cb_delete;
  cbs.tpm_io_init = cb_io_init;
  cbs.tpm_io_getlocality = cb_locality;
  cbs.tpm_io_getphysicalpresence = cb_physical_presence;
  if (TPMLIB_RegisterCallbacks(&cbs) != TPM_SUCCESS) throw Error("libtpms rejected its callbacks");
  const TPM_RESULT rc = TPMLIB_MainInit();
  if (rc != TPM_SUCCESS) {
    TPMLIB_Terminate();
    throw Error("libtpms could not start the TPM from " + store.dir() +
                (g_last_error.empty() ? " (rc " + std::to_string(rc) + ")" : ": " + g_last_error));
  }
  g_engine_live = true;
}

TpmEngine::~TpmEngine() {
  TPMLIB_Terminate();
  g_engine_live = false;
  g_store = nullptr;
}

std::vector<uint8_t> TpmEngine::process(std::span<const uint8_t> command) {
  unsigned char* resp = nullptr;
  uint32_t resp_len = 0, resp_cap = 0;
  std::vector<uint8_t> cmd(command.begin(), command.end());  // libtpms takes a mutable buffer
  const TPM_RESULT rc =
      TPMLIB_Process(&resp, &resp_len, &resp_cap, cmd.data(), static_cast<uint32_t>(cmd.size()));
  std::vector<uint8_t> out;
  if (rc == TPM_SUCCESS && resp && resp_len >= proto::kHeaderSize)
    out.assign(resp, resp + resp_len);
  TPM_Free(resp);
  if (out.empty()) out = proto::make_response(version_, proto::failure_rc(version_));
  return out;
}

void TpmEngine::reset() {
  TPMLIB_Terminate();
  g_last_error.clear();
  if (const TPM_RESULT rc = TPMLIB_MainInit(); rc != TPM_SUCCESS) {
    g_engine_live = false;  // terminated: the destructor's Terminate is harmless
    throw Error("libtpms could not restart the TPM" +
                (g_last_error.empty() ? " (rc " + std::to_string(rc) + ")" : ": " + g_last_error));
  }
}

void TpmEngine::set_locality(uint8_t locality) { g_locality = locality; }

uint32_t libtpms_version() { return TPMLIB_GetVersion(); }

}  // namespace vtpm
