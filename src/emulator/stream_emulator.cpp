#include "emulator/stream_emulator.h"

#include <libtpms/tpm_nvfilename.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>

#include "common/error.h"
#include "emulator/sandbox.h"
#include "emulator/serve_loop.h"
#include "state/state_store.h"
#include "tpm/command_handler.h"
#include "tpm/provision.h"
#include "tpm/sapi.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace vtpm {

int run_stream_emulator(const StreamOptions& opts) {
  const TpmVersion v = opts.version;
  // A client may start the next emulator before the last one has saved and exited: wait for it.
  StateStore store(opts.state_dir, v, /*create=*/true, std::chrono::seconds(10), opts.key);
  const bool resume = v == TpmVersion::V2 || store.has(TPM_SAVESTATE_NAME);
  const bool fresh = !store.has(TPM_PERMANENT_ALL_NAME);
  TpmEngine engine(store);
  if (!opts.pcr_banks.empty()) apply_pcr_banks(engine, opts.pcr_banks);
  if (fresh && opts.ca)
    create_ek_certificates(engine, *opts.ca, "vtpm-hook EK " + opts.state_dir, store);
  if (opts.startup) {
    // Each client process is a power cycle: resume the state the last one saved when there is
    // one, so PCRs and sessions carry over like a suspend, else start clear.
    if (v == TpmVersion::V2) {
      Sapi sapi(engine);
      if (Tss2_Sys_Startup(sapi.get(), TPM2_SU_STATE) != TSS2_RC_SUCCESS)  // resume always tried
        check(Tss2_Sys_Startup(sapi.get(), TPM2_SU_CLEAR), "TPM Startup");
    } else {  // tpm2-tss has no TPM 1.2
      bool ok = false;
      if (resume) ok = proto::response_code(engine.process(proto::startup_command(v, false))) == 0;
      if (!ok)
        check(proto::response_code(engine.process(proto::startup_command(v, /*clear=*/true))),
              "TPM Startup");
    }
    if (opts.close_platform) close_platform_hierarchy(engine);
  }
  CommandHandler handler(
      v, [&](std::span<const uint8_t> c) { return engine.process(c); }, [](uint8_t) {},
      /*accept_vendor=*/false);
  // The cmd TCTI ends its child with SIGTERM, not EOF: save on that too.
  const UniqueFd sig = open_stop_signalfd();
  if (::geteuid() == 0) confine_to_dir(store.dir_fd());  // chroot needs CAP_SYS_CHROOT
  enter_emulator_sandbox();
  try {
    serve_stream(STDIN_FILENO, STDOUT_FILENO, sig.get(), handler);
  } catch (const Error&) {
    save_state(engine);  // a broken client must not cost the TPM its state
    throw;
  }
  save_state(engine);
  return 0;
}

}  // namespace vtpm
