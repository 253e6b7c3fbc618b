#include "vtpm_hook/emulator_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <thread>

#include "vtpm_hook/command_handler.h"
#include "vtpm_hook/error.h"
#include "vtpm_hook/logging.h"
#include "vtpm_hook/process_util.h"
#include "vtpm_hook/provision.h"
#include "vtpm_hook/sandbox.h"
#include "vtpm_hook/serve_loop.h"
#include "vtpm_hook/state_store.h"
#include "vtpm_hook/tpm_engine.h"
#include "vtpm_hook/tpm_proto.h"

namespace vtpm {
namespace {

constexpr char kReady[] = "ready";  // followed by the proxy's tpm number

// Runtimes start hooks with odd signal state (crun blocks SIGTERM): start from a clean slate.
void reset_signals() {
  for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

// runc waits for EOF on the hook's stdout/stderr: the emulator must hold no copy of them.
void detach_stdio_and_fds(const std::set<int>& keep) {
  int null_fd = ::open("/dev/null", O_RDWR);
  for (int fd = 0; fd <= 2; ++fd) ::dup2(null_fd, fd);
  if (null_fd > 2) ::close(null_fd);
  std::vector<int> to_close;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      const int fd = std::atoi(e->d_name);
      if (fd > 2 && fd != ::dirfd(d) && !keep.count(fd)) to_close.push_back(fd);
    }
    ::closedir(d);
  }
  for (int fd : to_close) ::close(fd);
}

void send_to_parent(int fd, const std::string& msg) {
  if (fd >= 0) [[maybe_unused]]
    auto n = ::write(fd, msg.data(), msg.size());
}

void save_and_stop(TpmEngine& engine) {
  // Shutdown(STATE) keeps volatile state and spares the dictionary-attack counter.
  const auto resp = engine.process(proto::shutdown_state_command(engine.version()));
  const auto hdr = proto::parse_header(resp);
  if (hdr && hdr->code != 0)
    spdlog::info("TPM shutdown answered rc 0x{:x} (TPM was not started)", hdr->code);
}

// The emulator's whole life, in the forked child. Never returns.
[[noreturn]] void emulator_main(const EmulatorOptions& opts, int ready_fd, int container_pidfd) {
  int exit_code = 0;
  // Drop the hook's logger (and its FILE*) before its fds are closed under it.
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("vtpm-emu"));
  reset_signals();
  ::setsid();
  detach_stdio_and_fds({ready_fd, container_pidfd});
  ::prctl(PR_SET_NAME, "vtpm-emu", 0, 0, 0);
  try {
    init_emulator_logging(opts.log_level, opts.log_file,
                          "vtpm-emu/" + opts.container_id + "/" + std::to_string(opts.spec.index));
    UniqueFd sig = open_stop_signalfd();
    StateStore store(opts.spec.state_path, opts.spec.version, opts.create_state_dir,
                     std::chrono::milliseconds(0), opts.key);
    const bool fresh = !store.has("permall");
    TpmEngine engine(store);
    if (!opts.spec.pcr_banks.empty()) apply_pcr_banks(engine, opts.spec.pcr_banks);
    if (fresh && opts.spec.create_certs && opts.ca)
      create_ek_certificates(engine, *opts.ca, "vtpm-hook EK " + opts.container_id);
    // The kernel times each command it sends while registering the device: have the TPM
    // started and self-tested before it can ask, so it answers at once even on a busy host.
    power_on(engine);
    spdlog::debug("TPM started and self-tested");
    ProxyDevice dev = create_proxy_device(opts.spec.version, opts.vtpmx);
    confine_to_dir(store.dir_fd());
    if (opts.run_as) {
      // Every later state access goes through the store's directory fd, so only that
      // directory (not its parents) must be the user's.
      hand_over_dir(store.dir_fd(), *opts.run_as);
      become(*opts.run_as);
    }
    CommandHandler handler(
        engine.version(), [&](std::span<const uint8_t> c) { return engine.process(c); },
        [&](uint8_t l) { engine.set_locality(l); }, /*accept_vendor=*/true);
    enter_emulator_sandbox();
    send_to_parent(ready_fd, std::string(kReady) + " " + std::to_string(dev.tpm_num));
    const int server_fd = dev.server_fd.get();
    ::close(ready_fd);
    ready_fd = -1;
    spdlog::info("serving TPM {} from {}", to_string(engine.version()), store.dir());
    const StopReason why = serve_proxy(server_fd, container_pidfd, sig.get(), handler);
    spdlog::info("stopping: {}", to_string(why));
    save_and_stop(engine);
  } catch (const std::exception& e) {
    send_to_parent(ready_fd, e.what());
    spdlog::error("{}", e.what());
    exit_code = 1;
  }
  spdlog::shutdown();
  ::_exit(exit_code);
}

}  // namespace

EmulatorProcess::~EmulatorProcess() {
  if (pid_ <= 0) return;
  stop_process(pid_, std::chrono::seconds(10));
  ::waitpid(pid_, nullptr, WNOHANG);
}

std::pair<EmulatorProcess, unsigned> spawn_emulator(const EmulatorOptions& opts,
                                                    int container_pidfd) {
  int pfd[2];
  if (::pipe2(pfd, O_CLOEXEC) != 0) throw sys_error("pipe");
  UniqueFd rd(pfd[0]), wr(pfd[1]);
  spdlog::default_logger()->flush();
  const pid_t pid = ::fork();
  if (pid < 0) throw sys_error("fork emulator");
  if (pid == 0) emulator_main(opts, wr.get(), container_pidfd);

  wr.reset();
  EmulatorProcess emu(pid, open_pidfd(pid));
  std::string msg;
  char buf[512];
  for (;;) {
    ssize_t r = ::read(rd.get(), buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    msg.append(buf, static_cast<size_t>(r));
  }
  unsigned tpm_num = 0;
  if (std::sscanf(msg.c_str(), "ready %u", &tpm_num) != 1 || msg.rfind(kReady, 0) != 0) {
    ::waitpid(pid, nullptr, 0);
    emu.release();
    throw Error(msg.empty() ? "the emulator died while starting" : msg);
  }
  return {std::move(emu), tpm_num};
}

HostDevices wait_for_registration(const EmulatorProcess& emu, unsigned tpm_num, TpmVersion v,
                                  std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    if (auto dev = read_host_devices(tpm_num, v)) return *dev;
    int status = 0;
    if (::waitpid(emu.pid(), &status, WNOHANG) == emu.pid())
      throw Error("the kernel did not register /dev/tpm" + std::to_string(tpm_num) +
                  ": the emulator exited");
    if (std::chrono::steady_clock::now() > deadline)
      throw Error("the kernel did not register /dev/tpm" + std::to_string(tpm_num) + " within " +
                  std::to_string(timeout.count()) + " ms");
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(5000));
  }
}

int run_stream_emulator(const StreamOptions& opts) {
  const TpmVersion v = opts.version;
  // A client may start the next emulator before the last one has saved and exited: wait for it.
  StateStore store(opts.state_dir, v, /*create=*/true, std::chrono::seconds(10), opts.key);
  const bool resume = v == TpmVersion::V2 || store.has("savestate");
  const bool fresh = !store.has("permall");
  TpmEngine engine(store);
  if (!opts.pcr_banks.empty()) apply_pcr_banks(engine, opts.pcr_banks);
  if (fresh && opts.ca) create_ek_certificates(engine, *opts.ca, "vtpm-hook EK " + opts.state_dir);
  if (opts.startup) {
    // Each client process is a power cycle: resume the state the last one saved when there is
    // one, so PCRs and sessions carry over like a suspend, else start clear.
    bool ok = false;
    if (resume) {
      const auto r = engine.process(proto::startup_command(v, /*clear=*/false));
      ok = proto::parse_header(r)->code == 0;
    }
    if (!ok) {
      const auto r = engine.process(proto::startup_command(v, /*clear=*/true));
      if (const auto rc = proto::parse_header(r)->code; rc != 0)
        throw Error(fmt::format("TPM Startup failed with rc 0x{:x}", rc));
    }
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
    save_and_stop(engine);  // a broken client must not cost the TPM its state
    throw;
  }
  save_and_stop(engine);
  return 0;
}

}  // namespace vtpm
