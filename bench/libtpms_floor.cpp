// The floor: libtpms alone, in this process, through the project's TpmEngine and StateStore.
// No kernel, no proxy, no fork: what any vTPM built on libtpms cannot go below.
//   libtpms_floor [--benchmark_format=json] [--benchmark_min_time=...]
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "state/state_store.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace {

using vtpm::StateStore;
using vtpm::TpmEngine;
using vtpm::TpmVersion;
namespace proto = vtpm::proto;

constexpr uint32_t kCcCreatePrimary = 0x131;
constexpr uint32_t kCcPcrExtend = 0x182;
constexpr uint32_t kCcFlushContext = 0x165;
constexpr uint32_t kCcGetRandom = 0x17b;
constexpr uint32_t kRhOwner = 0x40000001;

std::vector<uint8_t> plain(uint32_t cc, const std::vector<uint8_t>& body) {
  std::vector<uint8_t> c;
  proto::put_u16(c, proto::kTpm2StNoSessions);
  proto::put_u32(c, static_cast<uint32_t>(proto::kHeaderSize + body.size()));
  proto::put_u32(c, cc);
  c.insert(c.end(), body.begin(), body.end());
  return c;
}

// A command with an empty-password session (TPM_RS_PW) authorizing handle h, as a client sends it.
std::vector<uint8_t> password_session(uint32_t cc, uint32_t h, const std::vector<uint8_t>& p) {
  std::vector<uint8_t> body;
  proto::put_u32(body, h);
  proto::put_u32(body, 9);                   // authorization area size
  proto::put_u32(body, 0x40000009);          // TPM_RS_PW
  body.insert(body.end(), {0, 0, 0, 0, 0});  // empty nonce, attributes, empty password
  body.insert(body.end(), p.begin(), p.end());
  return proto::command(proto::kTpm2StSessions, cc, body);
}

std::vector<uint8_t> get_random(uint16_t n) {
  std::vector<uint8_t> b;
  proto::put_u16(b, n);
  return plain(kCcGetRandom, b);
}

std::vector<uint8_t> pcr_extend(uint32_t pcr) {
  std::vector<uint8_t> p;
  proto::put_u32(p, 1);       // TPML_DIGEST_VALUES.count
  proto::put_u16(p, 0x000b);  // TPM_ALG_SHA256
  for (int i = 0; i < 32; ++i) p.push_back(static_cast<uint8_t>(i));
  return password_session(kCcPcrExtend, pcr, p);
}

// Storage key templates (restricted decrypt, AES-128-CFB), owner hierarchy, as
// `tpm2_createprimary -C o -G rsa2048|ecc256` make them.
std::vector<uint8_t> create_primary(bool rsa) {
  std::vector<uint8_t> pub;
  proto::put_u16(pub, rsa ? 0x0001 : 0x0023);  // type
  proto::put_u16(pub, 0x000b);                 // nameAlg sha256
  proto::put_u32(
      pub, 0x00030072);  // fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|decrypt
  proto::put_u16(pub, 0);       // authPolicy
  proto::put_u16(pub, 0x0006);  // AES
  proto::put_u16(pub, 128);
  proto::put_u16(pub, 0x0043);  // CFB
  proto::put_u16(pub, 0x0010);  // scheme NULL
  if (rsa) {
    proto::put_u16(pub, 2048);
    proto::put_u32(pub, 0);  // exponent: default
    proto::put_u16(pub, 0);  // unique
  } else {
    proto::put_u16(pub, 0x0003);  // NIST P-256
    proto::put_u16(pub, 0x0010);  // kdf NULL
    proto::put_u16(pub, 0);       // unique.x
    proto::put_u16(pub, 0);       // unique.y
  }
  std::vector<uint8_t> p = {0x00, 0x04, 0, 0, 0, 0};  // inSensitive: empty auth and data
  proto::put_u16(p, static_cast<uint16_t>(pub.size()));
  p.insert(p.end(), pub.begin(), pub.end());
  proto::put_u16(p, 0);  // outsideInfo
  proto::put_u32(p, 0);  // creationPCR: none
  return password_session(kCcCreatePrimary, kRhOwner, p);
}

std::vector<uint8_t> flush(uint32_t handle) {
  std::vector<uint8_t> b;
  proto::put_u32(b, handle);
  return plain(kCcFlushContext, b);
}

std::string make_temp_dir() {
  std::string t = (std::filesystem::temp_directory_path() / "vtpm-floor.XXXXXX").string();
  if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
  return t;
}

std::vector<uint8_t> must(TpmEngine& e, const std::vector<uint8_t>& cmd, const char* what) {
  auto r = e.process(cmd);
  if (proto::response_code(r) != 0)
    throw std::runtime_error(std::string(what) + " failed: rc 0x" + [&] {
      char b[16];
      snprintf(b, sizeof b, "%x", proto::response_code(r));
      return std::string(b);
    }());
  return r;
}

// VTPM_FLOOR_STATE=DIR: start the command benchmarks from a copy of that state (swtpm file
// names), so that the floor's CreatePrimary derives the same keys as the TPMs it is compared with
// (RSA primary keys come from the seed: the prime search, and so the time, differs per seed).
std::string seeded_temp_dir() {
  std::string dir = make_temp_dir();
  if (const char* from = ::getenv("VTPM_FLOOR_STATE"); from && *from)
    for (const auto& f : std::filesystem::directory_iterator(from))
      if (f.is_regular_file() && f.path().filename() != ".lock")
        std::filesystem::copy_file(f.path(), std::filesystem::path(dir) / f.path().filename());
  return dir;
}

// One started TPM 2 in a temp dir, for the command benchmarks.
struct Tpm {
  std::string dir = seeded_temp_dir();
  StateStore store{dir, TpmVersion::V2, true};
  TpmEngine engine{store};
  Tpm() { must(engine, proto::startup_command(TpmVersion::V2, true), "Startup"); }
  ~Tpm() { std::filesystem::remove_all(dir); }
};

void BM_GetRandom8(benchmark::State& st) {
  Tpm t;
  const auto cmd = get_random(8);
  for (auto _ : st) benchmark::DoNotOptimize(must(t.engine, cmd, "GetRandom"));
}

void BM_PCR_Extend(benchmark::State& st) {
  Tpm t;
  const auto cmd = pcr_extend(16);
  for (auto _ : st) benchmark::DoNotOptimize(must(t.engine, cmd, "PCR_Extend"));
}

void create_primary_bench(benchmark::State& st, bool rsa) {
  Tpm t;
  const auto cmd = create_primary(rsa);
  for (auto _ : st) {
    auto r = must(t.engine, cmd, "CreatePrimary");
    st.PauseTiming();
    must(t.engine, flush(proto::get_u32(r, proto::kHeaderSize)), "FlushContext");
    st.ResumeTiming();
  }
}
void BM_CreatePrimary_RSA2048(benchmark::State& st) { create_primary_bench(st, true); }
void BM_CreatePrimary_ECC_P256(benchmark::State& st) { create_primary_bench(st, false); }

// Engine init = open+lock the state dir and TPMLIB_MainInit: manufacture for a new state,
// loading "permall" for an existing one. Then Startup(CLEAR), as the kernel sends at once.
void engine_init_bench(benchmark::State& st, bool fresh) {
  const std::string dir = make_temp_dir();
  if (!fresh) {  // manufacture once
    StateStore s(dir, TpmVersion::V2, true);
    TpmEngine e(s);
    must(e, proto::startup_command(TpmVersion::V2, true), "Startup");
    e.process(proto::shutdown_state_command(TpmVersion::V2));
  }
  for (auto _ : st) {
    {
      StateStore s(dir, TpmVersion::V2, true);
      TpmEngine e(s);
      must(e, proto::startup_command(TpmVersion::V2, true), "Startup");
      st.PauseTiming();
    }
    if (fresh)
      for (const auto& f : std::filesystem::directory_iterator(dir))
        if (f.path().filename() != ".lock") std::filesystem::remove(f.path());
    st.ResumeTiming();
  }
  std::filesystem::remove_all(dir);
}
void BM_EngineInit_NewState(benchmark::State& st) { engine_init_bench(st, true); }
void BM_EngineInit_ExistingState(benchmark::State& st) { engine_init_bench(st, false); }

}  // namespace

BENCHMARK(BM_GetRandom8)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PCR_Extend)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CreatePrimary_RSA2048)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CreatePrimary_ECC_P256)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EngineInit_NewState)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EngineInit_ExistingState)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
