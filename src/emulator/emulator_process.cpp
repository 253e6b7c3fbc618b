#include "emulator/emulator_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/error.h"
#include "common/io_util.h"
#include "common/logging.h"
#include "common/pcr_banks.h"
#include "common/process_util.h"
#include "emulator/sandbox.h"
#include "emulator/serve_loop.h"
#include "state/state_store.h"
#include "tpm/command_handler.h"
#include "tpm/measure.h"
#include "tpm/provision.h"
#include "tpm/self_test.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

constexpr char kBanks[] = "banks";    // "banks sha1,sha256": the launch digests it needs
constexpr char kLoaded[] = "loaded";  // TPM started and self-tested: send the proxy fd
constexpr char kReady[] = "ready";    // serving the proxy fd

// What a sandboxed process may take, so that one that runs an attacker's code cannot exhaust the
// host: its address space (libtpms and OpenSSL use a few MiB), the size of any file it writes
// (state blobs are about 100 KiB; also the log), its fds; no core dump of a TPM's secrets.
constexpr struct {
  int resource;
  rlim_t limit;
} kBounds[] = {{RLIMIT_AS, rlim_t{512} << 20},
               {RLIMIT_FSIZE, rlim_t{64} << 20},
               {RLIMIT_NOFILE, 64},
               {RLIMIT_CORE, 0},
               {RLIMIT_MEMLOCK, 0}};

void bound_resources() {
  (void)::signal(SIGXFSZ, SIG_IGN);  // a write past the bound fails (EFBIG) instead of killing
  for (const auto& b : kBounds) {
    const rlimit r{b.limit, b.limit};
    if (::setrlimit(b.resource, &r) != 0) throw sys_error("setrlimit");
  }
}

// Runtimes start hooks with odd signal state (crun blocks SIGTERM): start from a clean slate.
void reset_signals() {
  for (int s = 1; s < NSIG; ++s) (void)::signal(s, SIG_DFL);  // SIGKILL/SIGSTOP refuse: fine
  // A message to the hook after it is gone must fail with EPIPE, not kill the process before
  // its error reaches the log.
  (void)::signal(SIGPIPE, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  (void)::sigprocmask(SIG_SETMASK, &none, nullptr);  // cannot fail with a valid set
}

// "loaded sha1,sha256": the banks an emulator says it measured the launch into. Only known bank
// names pass (they name digests in the log; the emulator's word is checked by the verifier's
// replay against the quote).
std::vector<std::string> split_measured_banks(const std::string& list) {
  std::vector<std::string> banks;
  for (const auto part : split(list, ',')) {
    std::string name(part);
    if (!pcr_bank_alg(name)) throw Error("the emulator measured an unknown PCR bank");
    banks.push_back(std::move(name));
  }
  return banks;
}

// "word sha1,sha256": a message that names PCR banks (split_measured_banks reads the list).
std::string with_banks(const char* word, const std::vector<std::string>& banks) {
  std::string out = word;
  for (size_t i = 0; i < banks.size(); ++i) out += (i ? "," : " ") + banks[i];
  return out;
}

// The launch's digests as the hook sends them: an event a line, "bank=hex" apart by spaces.
std::string format_event_digests(const std::vector<EventDigests>& events) {
  std::string out;
  for (const auto& e : events) {
    for (const auto& [bank, digest] : e) out += bank + "=" + to_hex(digest) + " ";
    out += "\n";
  }
  return out;
}

std::vector<EventDigests> parse_event_digests(const std::string& msg) {
  std::vector<EventDigests> events;
  for (const auto line : split(msg, '\n')) {
    if (line.empty()) continue;
    EventDigests& e = events.emplace_back();
    for (const auto kv : split(line, ' ')) {
      if (kv.empty()) continue;
      const auto eq = kv.find('=');
      const auto digest = eq == std::string_view::npos ? std::nullopt : from_hex(kv.substr(eq + 1));
      if (!digest) throw Error("the hook's launch digests are malformed");
      e[std::string(kv.substr(0, eq))] = *digest;
    }
  }
  if (events.empty()) throw Error("the hook sent no launch digests (the hook is gone?)");
  return events;
}

// The hook's side. A failure (an emulator that died) shows as its message or EOF where the hook
// reads next; MSG_NOSIGNAL: never SIGPIPE.
void send_message(int fd, const std::string& msg) {
  (void)::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
}

void send_to_parent(int fd, const std::string& msg) {
  // The parent reads EOF as failure if this does not arrive; once setup is over it is gone
  // (EPIPE: SIGPIPE is ignored, see reset_signals). write(): the seccomp filter has no send().
  if (fd >= 0) (void)!::write(fd, msg.data(), msg.size());
}

// One message from the other end (SOCK_SEQPACKET keeps message boundaries); "" at EOF.
std::string receive_message(int fd) {
  char buf[8192];  // the largest: the launch's digests, 3 events x 5 banks in hex
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw sys_error("read from the emulator");
    return std::string(buf, static_cast<size_t>(r));
  }
}

// The algorithms libtpms never tested in this run, as TPM_ALG_ID numbers (the self-test on
// demand's saving: docs/benchmarks.md).
std::string untested_list(const DeferredSelfTest::Backend& backend) {
  std::string out;
  for (const uint16_t alg : untested_algorithms(backend))
    out += fmt::format("{}0x{:04x}", out.empty() ? "" : ",", alg);
  return out.empty() ? "none" : out;
}

// What a template's child gets from the hook (spawn_emulator): its options as JSON, a NUL, its
// TPM's key (raw), and the fds in kPassedFds order. The hook's logger, file and /dev/vtpmx are
// the hook's, not the child's: a template's child always logs through its keeper.
constexpr size_t kMaxOptions = 16384;
enum PassedFd : size_t { kDirFd, kContainerPidfd, kLogPipe, kHandoffPipe, kPassedFds };
// A keeper's (PendingKeeper): "keeper {json}", later "devices {json}" with the cgroup watch's
// fd, then per device "device" with these.
constexpr char kKeeper[] = "keeper";
constexpr char kKeptDevices[] = "devices";
constexpr char kKeptDevice[] = "device";
enum KeptFd : size_t { kServerFd, kEmulatorPidfd, kKeptLog, kKeptHandoff, kKeptFds };

std::string encode_options(const EmulatorOptions& o) {
  nlohmann::json j = {{"index", o.index},
                      {"v2", o.version == TpmVersion::V2},
                      {"statePath", o.state_path},
                      {"pcrBanks", o.pcr_banks},
                      {"closePlatform", o.close_platform},
                      {"containerId", o.container_id},
                      {"logLevel", o.log_level},
                      {"resume", o.resume},
                      {"selfTestOnDemand", o.self_test_on_demand}};
  if (o.run_as) j["runAs"] = {o.run_as->uid, o.run_as->gid};
  if (o.measurement) j["measurementPcr"] = o.measurement->pcr;
  std::string out = j.dump();
  out.push_back('\0');
  if (o.key) out.append(o.key->bytes.begin(), o.key->bytes.end());
  return out;
}

EmulatorOptions decode_options(const std::string& msg) {
  const size_t nul = msg.find('\0');
  if (nul == std::string::npos) throw Error("the hook's options are malformed");
  const auto j = nlohmann::json::parse(msg.substr(0, nul));
  EmulatorOptions o;
  o.index = j.at("index").get<unsigned>();
  o.version = j.at("v2").get<bool>() ? TpmVersion::V2 : TpmVersion::V1_2;
  o.state_path = j.at("statePath").get<std::string>();
  o.pcr_banks = j.at("pcrBanks").get<std::vector<std::string>>();
  o.close_platform = j.at("closePlatform").get<bool>();
  o.container_id = j.at("containerId").get<std::string>();
  o.log_level = j.at("logLevel").get<std::string>();
  o.resume = j.at("resume").get<bool>();
  o.self_test_on_demand = j.at("selfTestOnDemand").get<bool>();
  if (j.contains("runAs")) o.run_as = Credentials{j["runAs"].at(0), j["runAs"].at(1)};
  if (j.contains("measurementPcr")) o.measurement = LaunchMeasurement{j["measurementPcr"], {}};
  if (nul + 1 < msg.size()) o.key = StateKey({msg.begin() + nul + 1, msg.end()});
  return o;
}

// Serves the TPM until the container is gone or told to stop, then saves it.
void run_tpm(const EmulatorOptions& opts, UniqueFd dir_fd, int sock, int container_pidfd, int sig) {
  const StateStore store =
      open_confined_state(std::move(dir_fd), opts.state_path, opts.version, opts.key, opts.run_as);
  TpmEngine engine(store);
  // (a resumed TPM has its banks: allocating them would need a Startup(CLEAR))
  if (!opts.pcr_banks.empty() && !opts.resume) apply_pcr_banks(engine, opts.pcr_banks);
  // The kernel times each command it sends while registering the device: have the TPM
  // started (and, unless on demand, self-tested) before the device exists, so it answers at
  // once on a busy host.
  const bool on_demand = opts.self_test_on_demand && engine.version() == TpmVersion::V2;
  power_on(engine, opts.close_platform, opts.resume, /*full_self_test=*/!on_demand);
  const DeferredSelfTest::Backend tpm = [&](std::span<const uint8_t> c) {
    return engine.process(c);
  };
  DeferredSelfTest self_test(tpm);
  spdlog::debug("TPM started{}", on_demand ? "; self-test on demand" : " and self-tested");
  std::string loaded = kLoaded;
  if (const auto& m = opts.measurement) {
    // Before the device exists: no command of the workload's can come between these.
    send_to_parent(sock, with_banks(kBanks, launch_banks(engine, m->pcr)));
    loaded = with_banks(kLoaded,
                        measure_launch(engine, m->pcr, parse_event_digests(receive_message(sock))));
    spdlog::debug("launch measured into PCR {}", m->pcr);
  }
  send_to_parent(sock, loaded);
  UniqueFd server = receive_fd(sock);
  CommandHandler handler(engine.version(),
                         on_demand ? DeferredSelfTest::Backend([&](std::span<const uint8_t> c) {
                           return self_test.process(c);
                         })
                                   : tpm,
                         workload_locality_sink(engine),
                         /*accept_vendor=*/true);  // always locality 0
  send_to_parent(sock, kReady);
  spdlog::info("serving TPM {} from {}", to_string(engine.version()), store.dir());
  // The start's buffers (the state blob, its decryption, the options) are free now: hand their
  // pages back rather than keep them private for the container's lifetime (madvise).
  (void)::malloc_trim(0);
  const StopReason why = serve_proxy(server.get(), container_pidfd, sig, handler);
  spdlog::info("stopping: {}", to_string(why));
  // Never a proxy fd that nobody reads: a command on it (the host's hwrng reads every vTPM,
  // also inside another vTPM's removal) would wait for its time-out, up to minutes. From here
  // the keeper answers the device, or, without one, the device goes with the hook's copy.
  server.reset();
  if (opts.handoff_pipe >= 0) (void)::close(opts.handoff_pipe);
  if (on_demand && spdlog::should_log(spdlog::level::debug))
    spdlog::debug("algorithms never tested in this run: {}", untested_list(tpm));
  save_state(engine);
}  // the engine and then the store (its lock) go: the state is free for a restart

// A forked child's first steps: the hook's logger dropped (before its fds are closed under it),
// a clean signal state, a session of its own, only the fds in `keep`, a name for ps.
void detach_from_hook(const char* name, const std::set<int>& keep) {
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(name));
  reset_signals();
  (void)::setsid();  // EPERM only for a group leader, which a fresh fork is not
  detach_stdio_and_fds(keep);
  (void)::prctl(PR_SET_NAME, name, 0, 0, 0);  // cosmetic: for ps and logs
}

// The child's last steps: the error (if any) to the parent and the log, then exit.
[[noreturn]] void finish_child(int parent_fd, const std::exception* error) {
  int code = 0;
  if (error) {
    send_to_parent(parent_fd, error->what());
    spdlog::error("{}", error->what());
    code = 1;
  }
  spdlog::shutdown();
  ::_exit(code);
}

// A keeper's set-up, before it holds any device: its log, its stop signals (read and ignored:
// only an empty cgroup ends it), an empty root, the unprivileged user, limits, seccomp.
// Returns the signalfd. Throws.
UniqueFd enter_keeper_sandbox(const KeeperOptions& opts) {
  init_emulator_logging(opts.log_level, opts.log_file, "vtpm-keep/" + opts.container_id);
  UniqueFd sig = open_stop_signalfd();
  UniqueFd empty(::open(opts.empty_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!empty) throw sys_error("open " + opts.empty_dir);
  confine_to_dir(empty.get());  // it opens nothing: an empty root
  empty.reset();
  become(opts.user);
  bound_resources();
  enter_emulator_sandbox();
  return sig;
}

// A sandboxed keeper that holds its devices: ready to its parent, then its life.
[[noreturn]] void keep_until_empty(std::vector<KeptDevice> devs, const CgroupWatch& cgroup, int sig,
                                   int ready_fd) {
  send_to_parent(ready_fd, kReady);
  (void)::close(ready_fd);  // the parent has read its answer (and nothing more goes there)
  // The heap it inherited (the hook's, or the template's): only its free pages go back (they
  // stay private to it otherwise)
  (void)::malloc_trim(0);
  try {
    keep_devices(devs, sig, cgroup);
  } catch (const std::exception& e) {
    finish_child(-1, &e);
  }
  spdlog::info("the container's cgroup is empty: its device numbers are free");
  finish_child(-1, nullptr);
}

// The keeper's whole life, in the hook's forked child. Never returns.
[[noreturn]] void keeper_main(std::vector<KeptDevice> devs, const CgroupWatch& cgroup,
                              const KeeperOptions& opts, int ready_fd) {
  std::set<int> keep = {ready_fd};
  for (const auto& d : devs) keep.insert({d.server_fd, d.emulator_pidfd, d.log_fd, d.handoff_fd});
  for (int fd : cgroup.fds()) keep.insert(fd);
  detach_from_hook("vtpm-keep", keep);
  try {
    const UniqueFd sig = enter_keeper_sandbox(opts);
    keep_until_empty(std::move(devs), cgroup, sig.get(), ready_fd);
  } catch (const std::exception& e) {
    finish_child(ready_fd, &e);
  }
}

// The emulator's whole life, in the forked child. Never returns.
[[noreturn]] void emulator_main(const EmulatorOptions& opts, UniqueFd dir_fd, int sock,
                                int container_pidfd) {
  std::set<int> keep = {sock, dir_fd.get(), container_pidfd};
  for (int fd : {opts.log_pipe, opts.handoff_pipe})
    if (fd >= 0) keep.insert(fd);
  detach_from_hook("vtpm-emu", keep);
  try {
    const std::string tag = "vtpm-emu/" + opts.container_id + "/" + std::to_string(opts.index);
    if (opts.log_pipe >= 0)
      init_pipe_logging(opts.log_level, opts.log_pipe, tag);  // no host file in its hands
    else
      init_emulator_logging(opts.log_level, opts.log_file, tag);
    const UniqueFd sig = open_stop_signalfd();
    run_tpm(opts, std::move(dir_fd), sock, container_pidfd, sig.get());
    // The state is saved and released; the container's keeper (if any) holds the device number.
  } catch (const std::exception& e) {
    finish_child(sock, &e);
  }
  finish_child(sock, nullptr);
}

}  // namespace

namespace {

// A template's child that a hook made an emulator (encode_options' packet).
[[noreturn]] void emulator_from_template(int sock, FdPacket p) {
  EmulatorOptions opts;
  try {
    if (p.fds.size() != kPassedFds) throw Error("the hook passed the wrong fds");
    opts = decode_options(p.data);
    // A fork shares the template's generator state, and pids repeat across pid namespaces:
    // OpenSSL's fork check alone cannot tell two children apart.
    reseed_random();
  } catch (const std::exception& e) {
    OPENSSL_cleanse(p.data.data(), p.data.size());
    finish_child(sock, &e);
  }
  OPENSSL_cleanse(p.data.data(), p.data.size());  // the key's copy (opts holds the other)
  opts.log_pipe = p.fds[kLogPipe].get();
  opts.handoff_pipe = p.fds[kHandoffPipe].get();
  emulator_main(opts, std::move(p.fds[kDirFd]), sock, p.fds[kContainerPidfd].get());
}

// A template's child that a hook made a keeper (PendingKeeper): its options first, then it
// sandboxes itself while the setup goes on; then "devices {json}" with the container's
// cgroup.events, and one packet per device with its fds in kKeptFds order. EOF before that:
// the setup failed, and it exits.
[[noreturn]] void keeper_from_template(int sock, const FdPacket& p) {
  (void)::prctl(PR_SET_NAME, "vtpm-keep", 0, 0, 0);
  try {
    if (!p.fds.empty()) throw Error("the hook passed the wrong fds");
    const auto j = nlohmann::json::parse(p.data.substr(sizeof kKeeper));
    const KeeperOptions opts{
        j.at("containerId").get<std::string>(), j.at("logLevel").get<std::string>(),
        j.at("logFile").get<std::string>(), j.at("emptyDir").get<std::string>(),
        Credentials{j.at("user").at(0).get<uid_t>(), j.at("user").at(1).get<gid_t>()}};
    const UniqueFd sig = enter_keeper_sandbox(opts);
    FdPacket head = receive_packet(sock, kMaxOptions);
    if (head.data.empty()) {
      spdlog::debug("the setup ended before it had devices to keep");
      finish_child(-1, nullptr);
    }
    if (!head.data.starts_with(std::string(kKeptDevices) + " ") || head.fds.size() != 1)
      throw Error("the hook passed the devices the wrong way");
    const auto h = nlohmann::json::parse(head.data.substr(sizeof kKeptDevices));
    const CgroupWatch cgroup =
        CgroupWatch::adopt_v2(std::move(head.fds[0]), h.at("cgroup").get<std::string>());
    std::vector<KeptDevice> devs;
    for (const bool v2 : h.at("v2").get<std::vector<bool>>()) {
      FdPacket d = receive_packet(sock, sizeof kKeptDevice);
      if (d.data != kKeptDevice || d.fds.size() != kKeptFds)
        throw Error("the hook passed a device the wrong way");
      // (raw fds from here: the keeper holds them until it exits)
      devs.push_back({.server_fd = d.fds[kServerFd].release(),
                      .emulator_pidfd = d.fds[kEmulatorPidfd].release(),
                      .version = v2 ? TpmVersion::V2 : TpmVersion::V1_2,
                      .log_fd = d.fds[kKeptLog].release(),
                      .handoff_fd = d.fds[kKeptHandoff].release()});
    }
    keep_until_empty(std::move(devs), cgroup, sig.get(), sock);
  } catch (const std::exception& e) {
    finish_child(sock, &e);
  }
}

}  // namespace

void child_from_template(int sock) {
  detach_from_hook("vtpm-emu", {sock});  // nothing of the template's: no socket, no signalfd
  FdPacket p;
  try {
    p = receive_packet(sock, kMaxOptions);
  } catch (const std::exception&) {
    ::_exit(1);  // (no log yet: the hook sees its socket close)
  }
  if (p.data.empty()) ::_exit(0);  // the hook went away: nothing was started
  if (p.data.starts_with(std::string(kKeeper) + " ")) keeper_from_template(sock, p);
  emulator_from_template(sock, std::move(p));
}

StateStore open_confined_state(UniqueFd dir_fd, const std::string& name, TpmVersion version,
                               std::optional<StateKey> key,
                               const std::optional<Credentials>& run_as) {
  confine_to_dir(dir_fd.get());
  if (run_as) become(*run_as);
  // The lock (and every file after it) is created as the state's owner.
  StateStore store(std::move(dir_fd), name, version, std::move(key));
  bound_resources();
  enter_emulator_sandbox();
  return store;
}

EmulatorProcess::~EmulatorProcess() {
  if (pid_ <= 0) return;
  // Undo of a failed setup: it saves and exits (no keeper holds its device yet).
  stop_pidfd(pidfd_.get(), std::chrono::seconds(10));
  (void)::waitpid(pid_, nullptr, WNOHANG);  // reap our child; it has exited (or is init's)
}

SpawnedEmulator spawn_emulator(const EmulatorOptions& opts, UniqueFd dir_fd, int container_pidfd,
                               std::optional<ForkedChild> forked) {
  // (declared first, gone last: its socket closes first, so an emulator that waits for its
  // proxy fd exits on EOF instead of waiting out the stop's grace)
  EmulatorProcess emu;
  UniqueFd ours;
  if (forked) {
    if (opts.log_pipe < 0 || opts.handoff_pipe < 0)
      throw Error("an emulator from the template needs a keeper");
    ours = std::move(forked->sock);
    emu = std::move(forked->process);
    spdlog::debug("emulator {} forked by the template {}", emu.pid(), forked->template_pid);
    std::string msg = encode_options(opts);
    const int fds[kPassedFds] = {dir_fd.get(), container_pidfd, opts.log_pipe, opts.handoff_pipe};
    send_packet(ours.get(), msg, fds);
    OPENSSL_cleanse(msg.data(), msg.size());
  } else {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
      throw sys_error("socketpair");
    ours = UniqueFd(sv[0]);
    UniqueFd theirs(sv[1]);
    spdlog::default_logger()->flush();
    const pid_t pid = ::fork();
    if (pid < 0) throw sys_error("fork emulator");
    if (pid == 0) {
      ours.reset();
      emulator_main(opts, std::move(dir_fd), theirs.get(), container_pidfd);
    }
    emu = EmulatorProcess(pid, open_pidfd(pid));
  }
  dir_fd.reset();
  const pid_t pid = emu.pid();
  auto fail = [&](const std::string& msg) {
    // reap: its message (or none) is the error; a template's child is the template's to reap
    if (::waitpid(pid, nullptr, 0) < 0) (void)stop_pidfd(emu.pidfd(), std::chrono::seconds(2));
    emu.release();
    return Error(msg.empty() ? "the emulator died while starting" : msg);
  };
  if (const auto& m = opts.measurement) {
    // The digests of the banks its started TPM extends (cheap: OpenSSL's low-level hashes).
    const std::string asked = receive_message(ours.get());
    if (!asked.starts_with(std::string(kBanks) + " ")) throw fail(asked);
    send_message(ours.get(), format_event_digests(
                                 m->digests(split_measured_banks(asked.substr(sizeof kBanks)))));
  }
  const std::string loaded = receive_message(ours.get());
  std::vector<std::string> banks;
  if (loaded.starts_with(std::string(kLoaded) + " "))
    banks = split_measured_banks(loaded.substr(sizeof kLoaded));
  else if (loaded != kLoaded)
    throw fail(loaded);
  if (opts.measurement && banks.empty()) throw fail("the emulator measured no PCR bank");
  // The ioctl needs CAP_SYS_ADMIN, which the emulator gave up before it read its state: the
  // hook creates the device and hands the server fd over. Its own copy goes to the keeper.
  ProxyDevice dev = create_proxy_device(opts.version, opts.vtpmx);
  send_fd(ours.get(), dev.server_fd.get());
  if (const auto msg = receive_message(ours.get()); msg != kReady) throw fail(msg);
  return {std::move(emu), dev.tpm_num, std::move(dev.server_fd), std::move(banks)};
}

PendingKeeper::PendingKeeper(ForkedChild child, const KeeperOptions& opts)
    : process_(std::move(child.process)),
      sock_(std::move(child.sock)),
      template_pid_(child.template_pid) {
  const nlohmann::json j = {{"containerId", opts.container_id},
                            {"logLevel", opts.log_level},
                            {"logFile", opts.log_file},
                            {"emptyDir", opts.empty_dir},
                            {"user", {opts.user.uid, opts.user.gid}}};
  send_packet(sock_.get(), std::string(kKeeper) + " " + j.dump(), {});
}

void PendingKeeper::hand_over(std::span<const KeptDevice> devs, const CgroupWatch& cgroup) {
  if (!cgroup.notifies()) throw Error("a keeper from the template needs cgroup v2");
  for (const auto& d : devs)
    if (d.server_fd < 0 || d.emulator_pidfd < 0 || d.log_fd < 0 || d.handoff_fd < 0)
      throw Error("a keeper from the template needs each emulator's pipes");
  try {
    nlohmann::json v2 = nlohmann::json::array();
    for (const auto& d : devs) v2.push_back(d.version == TpmVersion::V2);
    const nlohmann::json h = {{"cgroup", cgroup.dir()}, {"v2", v2}};
    const int events = cgroup.fd();
    send_packet(sock_.get(), std::string(kKeptDevices) + " " + h.dump(), {&events, 1});
    for (const auto& d : devs) {
      const int fds[kKeptFds] = {d.server_fd, d.emulator_pidfd, d.log_fd, d.handoff_fd};
      send_packet(sock_.get(), kKeptDevice, fds);
    }
  } catch (const SysError&) {
    // It failed while it sandboxed itself (its message waits), or it waits for the rest: EOF.
    (void)::shutdown(sock_.get(), SHUT_WR);
  }
  std::string msg;
  for (int tries = 0; tries < 2; ++tries) {
    try {
      msg = receive_message(sock_.get());
      break;
    } catch (const SysError& e) {
      // It exited with packets of ours unread: the reset comes first, then what it wrote.
      if (e.err != ECONNRESET) throw;
    }
  }
  if (msg != kReady) throw Error(msg.empty() ? "the keeper died while starting" : msg);
  spdlog::debug("keeper {} forked by the template {}", process_.pid(), template_pid_);
  process_.release();  // the template's child, the template's to reap
}

void spawn_keeper(std::vector<KeptDevice> devs, const CgroupWatch& cgroup,
                  const KeeperOptions& opts) {
  auto [rd, wr] = make_pipe();
  spdlog::default_logger()->flush();
  const pid_t pid = ::fork();
  if (pid < 0) throw sys_error("fork keeper");
  if (pid == 0) {
    rd.reset();
    keeper_main(std::move(devs), cgroup, opts, wr.get());
  }
  wr.reset();
  const std::string msg = read_all(rd.get(), 4096, "the keeper's answer");
  if (msg != kReady) {
    (void)::waitpid(pid, nullptr, 0);  // reap: its message (or none) is the error
    throw Error(msg.empty() ? "the keeper died while starting" : msg);
  }
}

bool release_emulator(int pidfd, std::chrono::milliseconds grace) {
  // SIGTERM: it saves the state and exits. Only its exit counts, seen on the pidfd: an emulator
  // running someone else's code may drop its state lock and live on, or ignore SIGTERM.
  if (stop_pidfd(pidfd, grace)) return true;
  spdlog::warn("the emulator is still running after SIGKILL");
  return false;
}

HostDevices wait_for_registration(const EmulatorProcess& emu, unsigned tpm_num, TpmVersion v,
                                  std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    if (auto dev = read_host_devices(tpm_num, v)) return *dev;
    // (its pidfd: a template's child is not ours to wait for)
    if (wait_pidfd(emu.pidfd(), std::chrono::milliseconds(0)))
      throw Error("the kernel did not register /dev/tpm" + std::to_string(tpm_num) +
                  ": the emulator exited");
    if (std::chrono::steady_clock::now() > deadline)
      throw Error("the kernel did not register /dev/tpm" + std::to_string(tpm_num) + " within " +
                  std::to_string(timeout.count()) + " ms");
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(5000));
  }
}

}  // namespace vtpm
