#include "tpm/provision.h"

#include <libtpms/tpm_nvfilename.h>
#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <map>

#include "common/error.h"
#include "common/io_util.h"
#include "common/pcr_banks.h"
#include "state/swtpm_blob.h"
#include "tpm/local_ca.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

struct Bank {
  uint16_t alg;
  bool active;
};

void check_rc(const std::vector<uint8_t>& resp, const std::string& what) {
  if (const uint32_t rc = proto::response_code(resp); rc != 0)
    throw Error(fmt::format("{} failed with TPM rc 0x{:x}", what, rc));
}

void ensure_started(TpmEngine& engine) {
  const auto r = engine.process(proto::startup_command(TpmVersion::V2, /*clear=*/true));
  const uint32_t rc = proto::response_code(r);
  if (rc != 0 && rc != TPM2_RC_INITIALIZE) check_rc(r, "TPM2_Startup");  // INITIALIZE: already up
}

// TPM2_GetCapability(TPM_CAP_PCRS): every implemented bank, active or not.
std::vector<Bank> read_banks(TpmEngine& engine) {
  std::vector<uint8_t> params;
  for (uint32_t w : {5u /*TPM_CAP_PCRS*/, 0u, 1u}) proto::put_u32(params, w);
  const auto r =
      engine.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_GetCapability, params));
  check_rc(r, "TPM2_GetCapability(PCRS)");
  // header, moreData (1), capability (4), TPML_PCR_SELECTION
  size_t off = proto::kHeaderSize + 1 + 4;
  const std::span<const uint8_t> b(r);
  if (b.size() < off + 4) throw Error("short TPM2_GetCapability(PCRS) response");
  const uint32_t count = proto::get_u32(b, off);
  off += 4;
  std::vector<Bank> banks;
  for (uint32_t i = 0; i < count; ++i) {
    if (b.size() < off + 3) throw Error("short TPM2_GetCapability(PCRS) response");
    const uint16_t alg = proto::get_u16(b, off);
    const uint8_t n = b[off + 2];
    off += 3;
    if (b.size() < off + n) throw Error("short TPM2_GetCapability(PCRS) response");
    const bool active =
        std::any_of(b.begin() + off, b.begin() + off + n, [](uint8_t x) { return x; });
    off += n;
    banks.push_back({alg, active});
  }
  return banks;
}

}  // namespace

void close_platform_hierarchy(TpmEngine& engine) {
  // Disabled rather than given a random platformAuth: no secret to keep, and GetCapability
  // shows the workload that it is closed. phEnable is volatile (every Startup sets it again),
  // and only this process can power-cycle the TPM.
  std::vector<uint8_t> params;
  proto::put_u32(params, TPM2_RH_PLATFORM);  // enable: phEnable
  params.push_back(TPM2_NO);                 // state
  check_rc(engine.process(proto::password_session_command(TPM2_CC_HierarchyControl,
                                                          std::array{TPM2_RH_PLATFORM}, params)),
           "TPM2_HierarchyControl(platform, NO)");
}

void power_on(TpmEngine& engine, bool close_platform) {
  if (engine.version() == TpmVersion::V2) {
    ensure_started(engine);
    spdlog::debug("TPM2_Startup done; the full self-test next");  // bench/ times the phases
    const uint8_t full_test[] = {TPM2_YES};
    check_rc(engine.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_SelfTest, full_test)),
             "TPM2_SelfTest");
    spdlog::debug("full self-test passed");
    if (close_platform) close_platform_hierarchy(engine);
    return;
  }
  const auto r = engine.process(proto::startup_command(TpmVersion::V1_2, /*clear=*/true));
  if (const uint32_t rc = proto::response_code(r); rc != 0 && rc != proto::kTpm12InvalidPostinit)
    check_rc(r, "TPM_Startup");
  check_rc(engine.process(
               proto::command(proto::kTpm12TagRquCommand, proto::kTpm12OrdContinueSelfTest, {})),
           "TPM_ContinueSelfTest");
}

void apply_pcr_banks(TpmEngine& engine, const std::vector<std::string>& wanted) {
  ensure_started(engine);
  const auto banks = read_banks(engine);
  bool same = true;
  for (const auto& name : wanted) {
    const auto alg = *pcr_bank_alg(name);
    if (std::none_of(banks.begin(), banks.end(), [&](const Bank& b) { return b.alg == alg; }))
      throw Error("this TPM does not implement PCR bank " + name);
  }
  std::vector<uint8_t> sel;
  proto::put_u32(sel, static_cast<uint32_t>(banks.size()));
  for (const auto& b : banks) {
    const bool want = std::any_of(wanted.begin(), wanted.end(),
                                  [&](const std::string& n) { return *pcr_bank_alg(n) == b.alg; });
    same &= want == b.active;
    proto::put_u16(sel, b.alg);
    sel.push_back(3);  // 24 PCRs
    for (int i = 0; i < 3; ++i) sel.push_back(want ? 0xff : 0x00);
  }
  if (!same) {
    check_rc(engine.process(proto::password_session_command(TPM2_CC_PCR_Allocate,
                                                            std::array{TPM2_RH_PLATFORM}, sel)),
             "TPM2_PCR_Allocate");
    spdlog::info("PCR banks allocated: {}", fmt::join(wanted, ","));
  }
  // A new allocation takes effect at the next TPM reset: power-cycle now, so the first Startup
  // (the kernel's or ours) sees it.
  check_rc(engine.process(proto::shutdown_command(TpmVersion::V2, /*clear=*/true)),
           "TPM2_Shutdown");
  engine.reset();
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

// Template L-1 (RSA 2048) or L-2 (ECC NIST P-256): a TPMT_PUBLIC.
std::vector<uint8_t> ek_template(bool rsa) {
  std::vector<uint8_t> t;
  proto::put_u16(t, rsa ? TPM2_ALG_RSA : TPM2_ALG_ECC);
  proto::put_u16(t, TPM2_ALG_SHA256);  // nameAlg
  proto::put_u32(t, TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                        TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                        TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT);
  proto::put_u16(t, sizeof kEkPolicy);
  t.insert(t.end(), std::begin(kEkPolicy), std::end(kEkPolicy));
  for (uint16_t v : {TPM2_ALG_AES, uint16_t{128}, TPM2_ALG_CFB, TPM2_ALG_NULL})
    proto::put_u16(t, v);  // AES-128-CFB, no scheme
  if (rsa) {
    proto::put_u16(t, 2048);
    proto::put_u32(t, 0);  // default exponent
    proto::put_u16(t, 256);
    t.insert(t.end(), 256, 0);
  } else {
    proto::put_u16(t, TPM2_ECC_NIST_P256);
    proto::put_u16(t, TPM2_ALG_NULL);  // no KDF
    for (int i = 0; i < 2; ++i) {
      proto::put_u16(t, 32);
      t.insert(t.end(), 32, 0);
    }
  }
  return t;
}

class Reader {
 public:
  Reader(std::span<const uint8_t> b, size_t off) : b_(b), off_(off) {}
  uint16_t u16() {
    need(2);
    off_ += 2;
    return proto::get_u16(b_, off_ - 2);
  }
  uint32_t u32() {
    need(4);
    off_ += 4;
    return proto::get_u32(b_, off_ - 4);
  }
  std::vector<uint8_t> tpm2b() {
    const uint16_t n = u16();
    need(n);
    off_ += n;
    return {b_.begin() + off_ - n, b_.begin() + off_};
  }
  void skip_alg_with_detail() {  // a scheme or KDF: an algorithm, and a hash unless TPM_ALG_NULL
    if (u16() != TPM2_ALG_NULL) u16();
  }

 private:
  void need(size_t n) {
    if (off_ + n > b_.size()) throw Error("short TPM2_CreatePrimary response");
  }
  std::span<const uint8_t> b_;
  size_t off_;
};

// TPM2_CreatePrimary response -> transient handle and the key's public part.
std::pair<uint32_t, EkPublic> parse_primary(const std::vector<uint8_t>& r) {
  Reader rd(r, proto::kHeaderSize);
  const uint32_t handle = rd.u32();
  rd.u32();  // parameterSize
  rd.u16();  // TPM2B_PUBLIC size
  EkPublic ek;
  ek.rsa = rd.u16() == TPM2_ALG_RSA;
  rd.u16();                         // nameAlg
  rd.u32();                         // attributes
  rd.tpm2b();                       // authPolicy
  if (rd.u16() != TPM2_ALG_NULL) {  // symmetric: keyBits, mode
    rd.u16();
    rd.u16();
  }
  rd.skip_alg_with_detail();  // scheme
  if (ek.rsa) {
    rd.u16();  // keyBits
    rd.u32();  // exponent
    ek.modulus = rd.tpm2b();
  } else {
    rd.u16();                   // curve
    rd.skip_alg_with_detail();  // kdf
    ek.x = rd.tpm2b();
    ek.y = rd.tpm2b();
  }
  return {handle, ek};
}

void write_certificate(TpmEngine& engine, uint32_t index, const std::vector<uint8_t>& der) {
  std::vector<uint8_t> define;
  proto::put_u16(define, 0);  // no auth value
  proto::put_u16(define, 14);
  proto::put_u32(define, index);
  proto::put_u16(define, TPM2_ALG_SHA256);
  proto::put_u32(define, kEkCertNvAttributes);
  proto::put_u16(define, 0);
  proto::put_u16(define, static_cast<uint16_t>(der.size()));
  check_rc(engine.process(proto::password_session_command(TPM2_CC_NV_DefineSpace,
                                                          std::array{TPM2_RH_PLATFORM}, define)),
           "TPM2_NV_DefineSpace");
  for (size_t off = 0; off < der.size(); off += kNvChunk) {
    const size_t n = std::min(kNvChunk, der.size() - off);
    std::vector<uint8_t> data;
    proto::put_u16(data, static_cast<uint16_t>(n));
    data.insert(data.end(), der.begin() + off, der.begin() + off + n);
    proto::put_u16(data, static_cast<uint16_t>(off));
    check_rc(engine.process(proto::password_session_command(
                 TPM2_CC_NV_Write, std::array{TPM2_RH_PLATFORM, index}, data)),
             "TPM2_NV_Write");
  }
  // WRITEDEFINE: locked until the index is undefined, as swtpm_setup --lock-nvram leaves it.
  check_rc(engine.process(proto::password_session_command(TPM2_CC_NV_WriteLock,
                                                          std::array{TPM2_RH_PLATFORM, index}, {})),
           "TPM2_NV_WriteLock");
}

}  // namespace

std::vector<EkCertificate> create_ek_certificates(TpmEngine& engine, const EkSigner& sign,
                                                  const StateStore& store) {
  ensure_started(engine);
  std::vector<EkCertificate> out;
  for (const EkSlot& k : kEkSlots) {
    const auto tmpl = ek_template(k.rsa);
    std::vector<uint8_t> params = {0, 4, 0, 0, 0, 0};  // inSensitive: no auth, no data
    proto::put_u16(params, static_cast<uint16_t>(tmpl.size()));
    params.insert(params.end(), tmpl.begin(), tmpl.end());
    params.insert(params.end(), {0, 0, 0, 0, 0, 0});  // outsideInfo, creationPCR
    const auto r = engine.process(proto::password_session_command(
        TPM2_CC_CreatePrimary, std::array{TPM2_RH_ENDORSEMENT}, params));
    check_rc(r, k.rsa ? "TPM2_CreatePrimary(RSA EK)" : "TPM2_CreatePrimary(ECC EK)");
    const auto [handle, pub] = parse_primary(r);
    std::vector<uint8_t> persistent;
    proto::put_u32(persistent, k.persistent_handle);
    check_rc(engine.process(proto::password_session_command(
                 TPM2_CC_EvictControl, std::array{TPM2_RH_OWNER, handle}, persistent)),
             "TPM2_EvictControl");
    std::vector<uint8_t> flush;
    proto::put_u32(flush, handle);
    check_rc(engine.process(proto::command(proto::kTpm2StNoSessions, TPM2_CC_FlushContext, flush)),
             "TPM2_FlushContext");
    auto der = sign(pub);
    write_certificate(engine, k.nv_index, der);
    out.push_back({k, std::move(der)});
  }
  spdlog::info("EKs and EK certificates created");
  check_rc(engine.process(proto::shutdown_command(TpmVersion::V2, /*clear=*/true)),
           "TPM2_Shutdown");
  engine.reset();
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
  const auto resp = engine.process(proto::shutdown_state_command(engine.version()));
  const auto hdr = proto::parse_header(resp);
  if (hdr && hdr->code != 0)
    spdlog::info("TPM shutdown answered rc 0x{:x} (TPM was not started)", hdr->code);
}

}  // namespace vtpm
