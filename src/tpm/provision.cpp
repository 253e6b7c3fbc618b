#include "tpm/provision.h"

#include <libtpms/tpm_nvfilename.h>
#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include "common/error.h"
#include "common/io_util.h"
#include "common/pcr_banks.h"
#include "state/swtpm_blob.h"
#include "tpm/local_ca.h"
#include "tpm/sapi.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

struct Bank {
  uint16_t alg;
  bool active;
};

void ensure_started(Sapi& sapi) {
  const TSS2_RC rc = Tss2_Sys_Startup(sapi.get(), TPM2_SU_CLEAR);
  if (rc != TPM2_RC_INITIALIZE) check(rc, "TPM2_Startup");  // INITIALIZE: already up
}

// TPM2_GetCapability(TPM_CAP_PCRS): every implemented bank, active or not.
std::vector<Bank> read_banks(Sapi& sapi) {
  const TPML_PCR_SELECTION sel = pcr_allocation(sapi);
  std::vector<Bank> banks;
  for (uint32_t i = 0; i < sel.count; ++i) {
    const TPMS_PCR_SELECTION& s = sel.pcrSelections[i];
    const auto* end = s.pcrSelect + s.sizeofSelect;
    banks.push_back({s.hash, std::any_of(s.pcrSelect, end, [](uint8_t x) { return x != 0; })});
  }
  return banks;
}

void close_platform_hierarchy(Sapi& sapi) {
  check(Tss2_Sys_HierarchyControl(sapi.get(), TPM2_RH_PLATFORM, Sapi::password(), TPM2_RH_PLATFORM,
                                  TPM2_NO, nullptr),
        "TPM2_HierarchyControl(platform, NO)");
}

// A power cycle: the allocation or the new objects count from the next Startup on.
void shutdown_and_reset(TpmEngine& engine) {
  Sapi sapi(engine);
  check(Tss2_Sys_Shutdown(sapi.get(), nullptr, TPM2_SU_CLEAR, nullptr), "TPM2_Shutdown");
  engine.reset();
}

}  // namespace

void close_platform_hierarchy(TpmEngine& engine) {
  // Disabled rather than given a random platformAuth: no secret to keep, and GetCapability
  // shows the workload that it is closed. phEnable is volatile (every Startup sets it again),
  // and only this process can power-cycle the TPM.
  Sapi sapi(engine);
  close_platform_hierarchy(sapi);
}

void power_on(TpmEngine& engine, bool close_platform, bool resume, bool full_self_test) {
  if (engine.version() == TpmVersion::V2) {
    Sapi sapi(engine);
    // Resume: what the last Shutdown(STATE) saved (PCRs 0-15, the clock's restart count, saved
    // contexts) comes back. Without such a state the TPM refuses (TPM_RC_VALUE): start afresh.
    const TSS2_RC rc = resume ? Tss2_Sys_Startup(sapi.get(), TPM2_SU_STATE) : TPM2_RC_VALUE;
    if (resume && rc != TPM2_RC_SUCCESS)
      spdlog::warn(
          "TPM2_Startup(STATE) answered 0x{:x}: no saved state to resume; the TPM starts "
          "afresh (PCRs reset)",
          rc);
    if (rc != TPM2_RC_SUCCESS) ensure_started(sapi);
    if (full_self_test) {
      spdlog::debug("TPM2_Startup done; the full self-test next");  // bench/ times the phases
      check(Tss2_Sys_SelfTest(sapi.get(), nullptr, TPM2_YES, nullptr), "TPM2_SelfTest");
      spdlog::debug("full self-test passed");
    }
    if (close_platform) close_platform_hierarchy(sapi);
    return;
  }
  // tpm2-tss has no TPM 1.2: its few commands stay hand-built.
  uint32_t rc = resume ? proto::response_code(engine.process(
                             proto::startup_command(TpmVersion::V1_2, /*clear=*/false)))
                       : 1;
  if (resume && rc != 0)
    spdlog::warn(
        "TPM_Startup(ST_STATE) answered 0x{:x}: no saved state to resume; the TPM starts "
        "afresh (PCRs reset)",
        rc);
  if (rc != 0)
    rc = proto::response_code(
        engine.process(proto::startup_command(TpmVersion::V1_2, /*clear=*/true)));
  if (rc != 0 && rc != proto::kTpm12InvalidPostinit) check(rc, "TPM_Startup");
  check(proto::response_code(engine.process(
            proto::command(proto::kTpm12TagRquCommand, proto::kTpm12OrdContinueSelfTest, {}))),
        "TPM_ContinueSelfTest");
}

void apply_pcr_banks(TpmEngine& engine, const std::vector<std::string>& wanted) {
  {
    Sapi sapi(engine);
    ensure_started(sapi);
    const auto banks = read_banks(sapi);
    for (const auto& name : wanted) {
      const auto alg = *pcr_bank_alg(name);
      if (std::none_of(banks.begin(), banks.end(), [&](const Bank& b) { return b.alg == alg; }))
        throw Error("this TPM does not implement PCR bank " + name);
    }
    TPML_PCR_SELECTION sel{};
    if (banks.size() > std::size(sel.pcrSelections))
      throw Error("the TPM reports more PCR banks than TPM2_NUM_PCR_BANKS");
    bool same = true;
    for (const auto& b : banks) {
      const bool want = std::any_of(wanted.begin(), wanted.end(), [&](const std::string& n) {
        return *pcr_bank_alg(n) == b.alg;
      });
      same &= want == b.active;
      TPMS_PCR_SELECTION& s = sel.pcrSelections[sel.count++];
      s.hash = b.alg;
      s.sizeofSelect = 3;  // 24 PCRs
      std::fill_n(s.pcrSelect, s.sizeofSelect, want ? 0xff : 0x00);
    }
    if (!same) {
      TPMI_YES_NO ok = TPM2_NO;
      uint32_t max_pcr = 0, needed = 0, available = 0;
      check(Tss2_Sys_PCR_Allocate(sapi.get(), TPM2_RH_PLATFORM, Sapi::password(), &sel, &ok,
                                  &max_pcr, &needed, &available, nullptr),
            "TPM2_PCR_Allocate");
      spdlog::info("PCR banks allocated: {}", fmt::join(wanted, ","));
    }
  }
  // A new allocation takes effect at the next TPM reset: power-cycle now, so the first Startup
  // (the kernel's or ours) sees it.
  shutdown_and_reset(engine);
}

namespace {

// As swtpm_setup defines them: written by the platform only, readable by owner and platform,
// lockable for good (WRITEDEFINE).
constexpr uint32_t kEkCertNvAttributes = TPMA_NV_PPWRITE | TPMA_NV_WRITEDEFINE | TPMA_NV_PPREAD |
                                         TPMA_NV_OWNERREAD | TPMA_NV_AUTHREAD | TPMA_NV_NO_DA |
                                         TPMA_NV_PLATFORMCREATE;
static_assert(kEkCertNvAttributes == 0x42072001);
constexpr size_t kNvChunk = 768;

// TCG EK Credential Profile: PolicySecret(TPM_RH_ENDORSEMENT), the EK templates' authPolicy.
constexpr uint8_t kEkPolicy[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC,
                                   0x8D, 0x46, 0xA5, 0xD7, 0x24, 0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52,
                                   0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA};

// Template L-1 (RSA 2048) or L-2 (ECC NIST P-256).
TPM2B_PUBLIC ek_template(bool rsa) {
  TPM2B_PUBLIC t{};
  TPMT_PUBLIC& p = t.publicArea;
  p.type = rsa ? TPM2_ALG_RSA : TPM2_ALG_ECC;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                       TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  p.authPolicy.size = sizeof kEkPolicy;
  std::copy(std::begin(kEkPolicy), std::end(kEkPolicy), p.authPolicy.buffer);
  // AES-128-CFB, no scheme; the unique field zeros of the key's size.
  const TPMT_SYM_DEF_OBJECT aes{TPM2_ALG_AES, {.aes = 128}, {.aes = TPM2_ALG_CFB}};
  if (rsa) {
    p.parameters.rsaDetail.symmetric = aes;
    p.parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
    p.parameters.rsaDetail.keyBits = 2048;
    p.parameters.rsaDetail.exponent = 0;  // the default, 65537
    p.unique.rsa.size = 256;
  } else {
    p.parameters.eccDetail.symmetric = aes;
    p.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    p.unique.ecc.x.size = 32;
    p.unique.ecc.y.size = 32;
  }
  return t;
}

template <typename B>
std::vector<uint8_t> bytes_of(const B& tpm2b) {
  return {tpm2b.buffer, tpm2b.buffer + tpm2b.size};
}

void write_certificate(Sapi& sapi, uint32_t index, const std::vector<uint8_t>& der) {
  TPM2B_NV_PUBLIC pub{};
  pub.nvPublic.nvIndex = index;
  pub.nvPublic.nameAlg = TPM2_ALG_SHA256;
  pub.nvPublic.attributes = kEkCertNvAttributes;
  pub.nvPublic.dataSize = static_cast<uint16_t>(der.size());
  const TPM2B_AUTH no_auth{};
  check(Tss2_Sys_NV_DefineSpace(sapi.get(), TPM2_RH_PLATFORM, Sapi::password(), &no_auth, &pub,
                                nullptr),
        "TPM2_NV_DefineSpace");
  for (size_t off = 0; off < der.size(); off += kNvChunk) {
    TPM2B_MAX_NV_BUFFER chunk{};
    chunk.size = static_cast<uint16_t>(std::min(kNvChunk, der.size() - off));
    std::copy_n(der.begin() + static_cast<std::ptrdiff_t>(off), chunk.size, chunk.buffer);
    check(Tss2_Sys_NV_Write(sapi.get(), TPM2_RH_PLATFORM, index, Sapi::password(), &chunk,
                            static_cast<uint16_t>(off), nullptr),
          "TPM2_NV_Write");
  }
  // WRITEDEFINE: locked until the index is undefined, as swtpm_setup --lock-nvram leaves it.
  check(Tss2_Sys_NV_WriteLock(sapi.get(), TPM2_RH_PLATFORM, index, Sapi::password(), nullptr),
        "TPM2_NV_WriteLock");
}

// A persistent EK from the slot's template; returns its public part.
EkPublic create_ek(Sapi& sapi, const EkSlot& k) {
  const TPM2B_SENSITIVE_CREATE sensitive{};  // no auth, no data
  const TPM2B_PUBLIC tmpl = ek_template(k.rsa);
  const TPM2B_DATA outside{};
  const TPML_PCR_SELECTION creation_pcr{};
  TPM2_HANDLE handle = 0;
  TPM2B_PUBLIC out{};
  TPM2B_CREATION_DATA creation_data{};
  TPM2B_DIGEST creation_hash{};
  TPMT_TK_CREATION ticket{};
  TPM2B_NAME name{};
  check(Tss2_Sys_CreatePrimary(sapi.get(), TPM2_RH_ENDORSEMENT, Sapi::password(), &sensitive, &tmpl,
                               &outside, &creation_pcr, &handle, &out, &creation_data,
                               &creation_hash, &ticket, &name, nullptr),
        k.rsa ? "TPM2_CreatePrimary(RSA EK)" : "TPM2_CreatePrimary(ECC EK)");
  check(Tss2_Sys_EvictControl(sapi.get(), TPM2_RH_OWNER, handle, Sapi::password(),
                              k.persistent_handle, nullptr),
        "TPM2_EvictControl");
  check(Tss2_Sys_FlushContext(sapi.get(), handle), "TPM2_FlushContext");
  const TPMU_PUBLIC_ID& u = out.publicArea.unique;
  EkPublic ek;
  ek.rsa = out.publicArea.type == TPM2_ALG_RSA;
  if (ek.rsa) {
    ek.modulus = bytes_of(u.rsa);
  } else {
    ek.x = bytes_of(u.ecc.x);
    ek.y = bytes_of(u.ecc.y);
  }
  return ek;
}

}  // namespace

std::vector<EkCertificate> create_ek_certificates(TpmEngine& engine, const EkSigner& sign,
                                                  const StateStore& store) {
  std::vector<EkCertificate> out;
  {
    Sapi sapi(engine);
    ensure_started(sapi);
    for (const EkSlot& k : kEkSlots) {
      auto der = sign(create_ek(sapi, k));
      write_certificate(sapi, k.nv_index, der);
      out.push_back({k, std::move(der)});
    }
  }
  spdlog::info("EKs and EK certificates created");
  shutdown_and_reset(engine);
  // A copy for the host's verifiers (vtpm-hook ek): they never need to ask a running TPM.
  std::vector<std::vector<uint8_t>> ders;
  for (const auto& c : out) ders.push_back(c.der);
  const std::string pem = certificates_pem(ders);
  write_file_atomic(store.dir_fd(), kEkCertificatesFile,
                    std::span(reinterpret_cast<const uint8_t*>(pem.data()), pem.size()),
                    store.dir() + "/" + kEkCertificatesFile);
  return out;
}

std::vector<EkCertificate> create_ek_certificates(TpmEngine& engine, const LocalCa& ca,
                                                  const std::string& subject,
                                                  const StateStore& store) {
  return create_ek_certificates(
      engine, [&](const EkPublic& ek) { return make_ek_certificate(ek, ca, subject); }, store);
}

std::vector<EkCertificate> provision_new_tpm(const StateStore& store,
                                             const std::vector<std::string>& pcr_banks,
                                             const EkSigner& sign) {
  for (const char* name : {TPM_PERMANENT_ALL_NAME, TPM_VOLATILESTATE_NAME, TPM_SAVESTATE_NAME})
    if (store.has(name))
      throw Error("createCerts: state dir " + store.dir() + " already holds " +
                  state_file_name(store.version(), name) +
                  ", although setup found no TPM there; refusing to certify a TPM it did not make");
  TpmEngine engine(store);
  if (!pcr_banks.empty()) apply_pcr_banks(engine, pcr_banks);
  return create_ek_certificates(engine, sign, store);
}

void save_state(TpmEngine& engine) {
  // Shutdown(STATE) keeps volatile state and spares the dictionary-attack counter.
  uint32_t rc = 0;
  if (engine.version() == TpmVersion::V2) {
    Sapi sapi(engine);
    rc = Tss2_Sys_Shutdown(sapi.get(), nullptr, TPM2_SU_STATE, nullptr);
  } else {
    rc = proto::response_code(engine.process(proto::shutdown_state_command(engine.version())));
  }
  if (rc != 0) spdlog::info("TPM shutdown answered rc 0x{:x} (TPM was not started)", rc);
}

}  // namespace vtpm
