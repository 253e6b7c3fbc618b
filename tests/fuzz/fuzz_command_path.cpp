// libFuzzer target: the emulator's command path with the real libtpms behind it.
//
// Each input is
//   1. one command as the kernel's vtpm proxy delivers it (one read() of at most 4096 bytes)
//      to a CommandHandler with accept_vendor=true, like serve_proxy does, and
//   2. a byte stream on a pipe to serve_stream (accept_vendor=false, like `vtpm-hook emulate`),
//      cut after a few framed commands so that no input runs unboundedly many TPM commands.
// Every response must be at least a TPM header whose size field equals its length, and
// serve_stream may only fail with vtpm::Error.
//
// libtpms is one TPM per process: the engine is created once in LLVMFuzzerInitialize on a
// fresh state directory (under $VTPM_FUZZ_STATE_PARENT, else /dev/shm or /tmp), and Startup is
// sent once. VTPM_FUZZ_TPM_VERSION=1.2 fuzzes a TPM 1.2 instead of a TPM 2.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "emulator/serve_loop.h"
#include "state/state_store.h"
#include "tpm/command_handler.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace {

constexpr size_t kMaxStreamCommands = 4;   // bounds the TPM work (e.g. key generation) per input
constexpr size_t kMaxStreamBytes = 16384;  // well below a pipe's 64 KiB: one write, no thread

vtpm::TpmVersion g_version = vtpm::TpmVersion::V2;
std::string g_dir;
std::unique_ptr<vtpm::StateStore> g_store;
std::unique_ptr<vtpm::TpmEngine> g_engine;
std::unique_ptr<vtpm::CommandHandler> g_proxy_handler;   // accept_vendor = true
std::unique_ptr<vtpm::CommandHandler> g_stream_handler;  // accept_vendor = false
bool g_need_startup = false;
bool g_need_flush = false;
bool g_verbose = false;  // VTPM_FUZZ_VERBOSE=1: print each response code (to check seeds)

[[noreturn]] void fail(const char* what, std::span<const uint8_t> resp = {}) {
  std::fprintf(stderr, "invariant violated: %s (response of %zu bytes:", what, resp.size());
  for (size_t i = 0; i < resp.size() && i < 32; ++i) std::fprintf(stderr, " %02x", resp[i]);
  std::fprintf(stderr, ")\n");
  std::abort();
}

void check_response(std::span<const uint8_t> resp) {
  if (resp.size() < vtpm::proto::kHeaderSize) fail("response shorter than a header", resp);
  const auto hdr = vtpm::proto::parse_header(resp);
  if (!hdr || hdr->size != resp.size()) fail("response header size != length", resp);
  if (resp.size() > vtpm::proto::kMaxCommandSize) fail("response larger than 4096", resp);
  const uint16_t tag = hdr->tag;
  const bool tag_ok = g_version == vtpm::TpmVersion::V2
                          ? (tag == vtpm::proto::kTpm2StNoSessions ||
                             tag == vtpm::proto::kTpm2StSessions || tag == 0x00C4 /*1.2 RSP*/)
                          : (tag >= 0x00C4 && tag <= 0x00C6);
  if (!tag_ok) fail("response tag", resp);
}

// TPM_RC_INITIALIZE (TPM 2) / TPM_INVALID_POSTINIT (1.2): the input shut the TPM down.
// Start it again before the next input so that later inputs reach the command code.
void note_rc(std::span<const uint8_t> resp) {
  const auto hdr = vtpm::proto::parse_header(resp);
  if (!hdr) return;
  if (g_verbose) std::fprintf(stderr, "response rc 0x%x, %u bytes\n", hdr->code, hdr->size);
  if (hdr->code == (g_version == vtpm::TpmVersion::V2 ? 0x100u : 0x26u)) g_need_startup = true;
  // TPM_RC_OBJECT_MEMORY, _SESSION_MEMORY, _SESSION_HANDLES: loaded objects and sessions from
  // earlier inputs fill the TPM; flush them so later inputs can load their own.
  if (g_version == vtpm::TpmVersion::V2 &&
      (hdr->code == 0x902 || hdr->code == 0x903 || hdr->code == 0x905 || hdr->code == 0x908))
    g_need_flush = true;
}

// TPM2_FlushContext of every loaded transient object and session (TPM2_GetCapability
// TPM_CAP_HANDLES lists them).
void flush_all() {
  g_need_flush = false;
  for (uint32_t base : {0x80000000u, 0x02000000u, 0x03000000u}) {
    std::vector<uint8_t> get;
    vtpm::proto::put_u16(get, vtpm::proto::kTpm2StNoSessions);
    vtpm::proto::put_u32(get, 22);
    vtpm::proto::put_u32(get, 0x17A);  // GetCapability
    vtpm::proto::put_u32(get, 1);      // TPM_CAP_HANDLES
    vtpm::proto::put_u32(get, base);
    vtpm::proto::put_u32(get, 64);
    const auto r = g_engine->process(get);
    check_response(r);
    if (vtpm::proto::parse_header(r)->code != 0 || r.size() < 19) continue;
    const uint32_t n = vtpm::proto::get_u32(r, 15);
    for (uint32_t i = 0; i < n && 19 + 4 * (i + 1) <= r.size(); ++i) {
      std::vector<uint8_t> flush;
      vtpm::proto::put_u16(flush, vtpm::proto::kTpm2StNoSessions);
      vtpm::proto::put_u32(flush, 14);
      vtpm::proto::put_u32(flush, 0x165);  // FlushContext
      vtpm::proto::put_u32(flush, vtpm::proto::get_u32(r, 19 + 4 * i));
      check_response(g_engine->process(flush));
    }
  }
}

void startup() {
  auto r = g_engine->process(vtpm::proto::startup_command(g_version, /*clear=*/true));
  check_response(r);
  g_need_startup = false;
}

// Splits off at most kMaxStreamCommands header-framed commands (plus whatever trailing bytes
// make the last one truncated or out of range, which serve_stream must reject by itself).
size_t stream_prefix(std::span<const uint8_t> in) {
  size_t off = 0;
  for (size_t n = 0; n < kMaxStreamCommands; ++n) {
    if (in.size() - off < vtpm::proto::kHeaderSize) return in.size();
    const auto hdr = vtpm::proto::parse_header(in.subspan(off));
    if (hdr->size < vtpm::proto::kHeaderSize || hdr->size > in.size() - off) return in.size();
    off += hdr->size;
  }
  return off;
}

void run_stream(std::span<const uint8_t> in) {
  in = in.first(std::min(stream_prefix(in), kMaxStreamBytes));
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) std::abort();
  size_t off = 0;
  while (off < in.size()) {
    ssize_t w = ::write(p[1], in.data() + off, in.size() - off);
    if (w <= 0) std::abort();
    off += static_cast<size_t>(w);
  }
  ::close(p[1]);
  const int out = ::memfd_create("fuzz-out", MFD_CLOEXEC);  // never blocks the writer
  if (out < 0) std::abort();
  try {
    vtpm::serve_stream(p[0], out, /*signal_fd=*/-1, *g_stream_handler);
  } catch (const vtpm::Error&) {
  }
  ::close(p[0]);
  // The output must be a sequence of whole responses.
  const off_t len = ::lseek(out, 0, SEEK_CUR);
  std::vector<uint8_t> bytes(static_cast<size_t>(len));
  if (len > 0 && ::pread(out, bytes.data(), bytes.size(), 0) != len) std::abort();
  ::close(out);
  std::span<const uint8_t> rest(bytes);
  while (!rest.empty()) {
    const auto hdr = vtpm::proto::parse_header(rest);
    if (!hdr || hdr->size < vtpm::proto::kHeaderSize || hdr->size > rest.size())
      fail("stream output is not a sequence of whole responses", rest);
    check_response(rest.first(hdr->size));
    note_rc(rest.first(hdr->size));
    rest = rest.subspan(hdr->size);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* v = std::getenv("VTPM_FUZZ_TPM_VERSION"); v && std::string(v) == "1.2")
    g_version = vtpm::TpmVersion::V1_2;
  g_verbose = std::getenv("VTPM_FUZZ_VERBOSE") != nullptr;
  std::string parent = "/tmp";
  if (const char* p = std::getenv("VTPM_FUZZ_STATE_PARENT"))
    parent = p;
  else if (::access("/dev/shm", W_OK) == 0)
    parent = "/dev/shm";  // fsync-heavy: keep it in RAM
  std::string tmpl = parent + "/vtpm-fuzz-XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    std::perror("mkdtemp");
    std::abort();
  }
  g_dir = tmpl;
  std::atexit([] {
    g_proxy_handler.reset();
    g_stream_handler.reset();
    g_engine.reset();
    g_store.reset();
    std::error_code ec;
    std::filesystem::remove_all(g_dir, ec);
  });
  try {
    g_store = std::make_unique<vtpm::StateStore>(g_dir, g_version, /*create=*/true);
    g_engine = std::make_unique<vtpm::TpmEngine>(*g_store);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cannot start the TPM: %s\n", e.what());
    std::abort();
  }
  auto backend = [](std::span<const uint8_t> c) { return g_engine->process(c); };
  g_proxy_handler = std::make_unique<vtpm::CommandHandler>(
      g_version, backend, [](uint8_t l) { g_engine->set_locality(l); }, /*accept_vendor=*/true);
  g_stream_handler = std::make_unique<vtpm::CommandHandler>(
      g_version, backend, [](uint8_t) {},
      /*accept_vendor=*/false);
  startup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g_need_startup) startup();
  if (g_need_flush) flush_all();
  const std::span<const uint8_t> in(data, size);

  // 1. The proxy's framing: one read() of at most TPM_BUFSIZE bytes is one command.
  const auto cmd = in.first(std::min(size, vtpm::proto::kMaxCommandSize));
  std::vector<uint8_t> resp;
  try {
    resp = g_proxy_handler->handle(cmd);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "CommandHandler::handle threw: %s\n", e.what());
    std::abort();
  }
  check_response(resp);
  note_rc(resp);
  // The locality command is answered by the handler itself, with success exactly for 0..4.
  const auto hdr = vtpm::proto::parse_header(cmd);
  if (hdr && hdr->code == vtpm::proto::kVendorSetLocality && hdr->size == cmd.size() &&
      cmd.size() == vtpm::proto::kHeaderSize + 1) {
    const uint32_t rc = vtpm::proto::parse_header(resp)->code;
    if ((rc == 0) != (cmd[vtpm::proto::kHeaderSize] < 5)) fail("locality answer", resp);
    if (resp.size() != vtpm::proto::kHeaderSize) fail("locality answer size", resp);
  }
  // The locality stays set, as in the kernel (which sends it only when it changes).

  // 2. The stream framing of `vtpm-hook emulate`.
  if (g_need_startup) startup();
  if (g_need_flush) flush_all();
  run_stream(in);
  return 0;
}
