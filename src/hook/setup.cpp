#include <fcntl.h>
#include <libtpms/tpm_nvfilename.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <vector>

#include "common/error.h"
#include "common/io_util.h"
#include "common/logging.h"
#include "common/process_util.h"
#include "container/container_dev.h"
#include "emulator/emulator_process.h"
#include "emulator/sandbox.h"
#include "emulator/template.h"
#include "hook/hooks.h"
#include "hook/host_inputs.h"
#include "hook/run_record.h"
#include "kernel/device_cgroup.h"
#include "kernel/vtpm_proxy.h"
#include "oci/measurement.h"
#include "oci/oci_config.h"
#include "oci/oci_state.h"
#include "oci/policy.h"
#include "oci/vtpm_request.h"
#include "state/state_dir.h"
#include "state/state_store.h"
#include "state/swtpm_blob.h"
#include "tpm/ca_signer.h"
#include "tpm/local_ca.h"
#include "tpm/provision.h"
#include "tpm/tpm_engine.h"

namespace vtpm {
namespace {

constexpr auto kRegistrationTimeout = std::chrono::seconds(30);

// Undo actions for a setup that fails half-way, run newest first.
class Rollback {
 public:
  ~Rollback() {
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
      try {
        (*it)();
      } catch (const std::exception& e) {
        spdlog::warn("rollback: {}", e.what());
      }
    }
  }
  void add(std::function<void()> f) { undo_.push_back(std::move(f)); }
  void commit() { undo_.clear(); }

 private:
  std::vector<std::function<void()>> undo_;
};

long long unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Leftovers of a runtime that died before teardown: the emulators of an earlier run of this
// same container (confirmed by pid and start time, see open_recorded_emulator) are told to
// save their state and exit, and its record dropped; a state dir still locked by anything
// else then is an error.
void recover_leftovers(const HookOptions& opts, const std::string& id,
                       const std::vector<VtpmSpec>& specs) {
  const auto old = read_run_record(opts.run_root, id);
  for (const auto& v : old ? old->vtpms : std::vector<VtpmRecord>{}) {
    const UniqueFd emu = open_recorded_emulator(v);
    if (!emu) continue;
    spdlog::warn("container {}: stopping emulator {} left by an earlier run", id, v.emulator_pid);
    if (!release_emulator(emu.get(), std::chrono::seconds(10)))
      throw Error("cannot stop emulator " + std::to_string(v.emulator_pid) + " of an earlier run");
  }
  for (const auto& s : specs) {
    std::optional<pid_t> holder;
    try {  // reached as setup reaches it below, which says why when it cannot be
      holder = state_lock_holder(open_state_dir(s.state_root, s.state_path, false).fd.get());
    } catch (const Error&) {
    }
    if (holder)
      throw Error("state dir " + s.state_path + " is in use by process " + std::to_string(*holder));
  }
  if (old) {
    spdlog::warn("container {}: removing the run record of an earlier run", id);
    remove_run_record(opts.run_root, id);
  }
}

std::string dev_name(const char* base, unsigned index) { return base + std::to_string(index); }

// Where the container finds the measured launch's log of its /dev/tpm<index>.
constexpr char kContainerLogDir[] = "run/vtpm-hook";
std::string container_log_name(unsigned index) {
  return index ? "measurements-" + std::to_string(index) + ".cel.json" : "measurements.cel.json";
}

struct ContainerNode {
  std::string name;  // tpm0, tpmrm0, ...
  DevNum dev;
  std::string host_node;
};

// A restore's hooks run before CRIU has rebuilt the container's mounts: its /dev (with the
// nodes of the checkpointed run, whose numbers are gone) and its root come afterwards, and no
// hook runs then. A child of the hook, detached from it (the runtime waits for the hook's
// stdio), waits for CRIU's pivot into the restored root and puts the nodes and the log there.
// Until then the device cgroup lets the container open only the new numbers (fail closed).
void place_after_restore(pid_t pid, const std::vector<ContainerNode>& nodes,
                         const std::vector<ReadonlyFile>& logs, const HookOptions& opts) {
  const pid_t child = ::fork();
  if (child < 0) throw sys_error("fork");
  if (child > 0) return;
  int code = 0;
  try {
    (void)::setsid();
    // (the hook's logger goes before its file's fd: closing it later would close the new one's)
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("vtpm-hook"));
    detach_stdio_and_fds({});
    init_logging(opts.log_level, opts.log_file);
    spdlog::debug("restored container {}: waiting for CRIU to rebuild its root", pid);
    const UniqueFd root =
        wait_for_restored_root(pid, "dev/" + nodes.at(0).name, std::chrono::seconds(120));
    if (!root)
      throw Error("the restored container " + std::to_string(pid) +
                  " did not get its root within 120 s (or is gone)");
    // (a restore in a user namespace fails at the checkpoint: CRIU cannot dump the bind-mounted
    // nodes such a container gets)
    for (const auto& n : nodes) place_device_node_at(root.get(), n.name, n.dev);
    if (!logs.empty()) place_readonly_files(pid, "/", kContainerLogDir, logs);
    spdlog::info("restored container {}: its /dev/{} and the rest in place", pid, nodes[0].name);
  } catch (const std::exception& e) {
    spdlog::error("restored container {}: {}", pid, one_line(e.what()));
    code = 1;
  }
  spdlog::shutdown();
  ::_exit(code);
}

// An empty directory: the root of the keeper and of the CA's signer.
std::string empty_dir(const std::string& run_root) {
  const std::string dir = run_root + "/empty";
  std::error_code ec;
  std::filesystem::create_directories(run_root, ec);  // when it fails, mkdir says why
  if (::mkdir(dir.c_str(), 0555) != 0 && errno != EEXIST) throw sys_error("create " + dir);
  return dir;
}

// createCerts on a new TPM: manufactured, EKs and certificates made. The CA's private key is
// only ever in the signer, a child that loads it itself (never the hook, so never an emulator),
// keeps no fd but its socket, and is confined like an emulator before it takes a request. The
// provisioning child, which runs libtpms, is confined before it touches the state, holds only
// the socket to the signer, and refuses state that appeared after the check below.
void provision_certificates(int dir_fd, const VtpmSpec& spec,
                            const std::optional<Credentials>& run_as, const HookOptions& opts,
                            const std::string& id) {
  if (::faccessat(dir_fd, state_file_name(spec.version, TPM_PERMANENT_ALL_NAME).c_str(), F_OK,
                  AT_SYMLINK_NOFOLLOW) == 0)
    return;  // manufactured before: its certificates are in its NV
  const std::string root = empty_dir(opts.run_root);
  const CaSigner signer = with_context("createCerts for " + spec.state_path, [&] {
    return CaSigner::start(opts.ca_key, opts.ca_cert, "vtpm-hook EK " + id, [&] {
      UniqueFd empty(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!empty) throw sys_error("open " + root);
      confine_to_dir(empty.get());
      enter_emulator_sandbox();
    });
  });
  run_in_child(
      [&] {
        UniqueFd dir(::fcntl(dir_fd, F_DUPFD_CLOEXEC, 3));
        if (!dir) throw sys_error("dup state dir fd");
        const StateStore store = open_confined_state(std::move(dir), spec.state_path, spec.version,
                                                     load_state_key(spec), run_as);
        provision_new_tpm(store, spec.pcr_banks, [&](const EkPublic& ek) {
          return request_ek_certificate(signer.fd(), ek);
        });
      },
      "createCerts for " + spec.state_path);
}

// The container's cgroup, to know when no process of the container is left (the keeper holds
// the device numbers until then). Without one of its own (a process started by hand) the
// emulators end with the container's init. One that cannot be watched fails the setup: the
// device numbers would otherwise be freed while the container can still open its nodes.
std::optional<CgroupWatch> watch_cgroup(pid_t pid) {
  try {
    return CgroupWatch::open(pid);
  } catch (const Error& e) {
    throw Error(std::string("the container's cgroup cannot be watched: ") + e.what());
  }
}

// The unprivileged user emulators and keepers run as, unless a vTPM's runAs names another.
Credentials emulator_user(const std::string& spec) {
  Credentials c;
  try {
    c = resolve_user(spec);
  } catch (const Error& e) {
    throw Error(
        "--emulator-user " + spec + ": " + e.what() +
        " (create it: adduser --system --group --no-create-home --home /nonexistent vtpm-hook)");
  }
  if (c.uid == 0 || c.gid == 0)
    throw Error("--emulator-user " + spec + " is root: emulators never run as root");
  return c;
}

}  // namespace

void run_setup(const std::string& state_json, const HookOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  const OciState state = parse_oci_state(state_json);
  const BundleConfig config = load_bundle_config(state.bundle);
  const RequestDefaults defaults = request_defaults(opts);
  const auto specs = resolve_vtpms(state, config, defaults);
  if (specs.empty()) {
    spdlog::info("container {} asks for no vTPM", state.id);
    return;
  }
  // What the engine asked to run, measured into every vTPM before the workload can reach it.
  const auto& measure_pcr = defaults.policy.measurement_pcr;
  // (made while the first emulator self-tests: see LaunchMeasurement)
  std::vector<LaunchEvent> launch;
  const Credentials emu_user = emulator_user(opts.emulator_user);
  std::vector<std::optional<Credentials>> run_as;
  for (const auto& s : specs) {
    run_as.push_back(s.run_as ? resolve_user(*s.run_as) : emu_user);
    check_key_files(s);
  }
  if (!state.pid) throw Error("OCI state: \"pid\" is missing; setup needs the container's process");
  const pid_t pid = *state.pid;
  // runc restore runs the hooks with the state of a stopped container and the restored
  // process's pid, before CRIU has rebuilt its mounts (docs/integration.md, "Checkpoint").
  const bool restore = state.status == "stopped";
  if (restore) spdlog::info("container {} is being restored from a checkpoint", state.id);
  check_vtpmx_available(opts.vtpmx);
  check_container_process(pid);
  const UniqueFd container_pidfd = open_pidfd(pid);
  const auto cgroup = watch_cgroup(pid);
  recover_leftovers(opts, state.id, specs);

  Rollback rollback;
  std::vector<EmulatorProcess> emulators;  // declared after rollback: stopped before it runs
  RunRecord rec{state.id, state.bundle, unix_ms(), {}};
  std::vector<DevNum> granted;
  std::vector<UniqueFd> server_fds;  // closed (the devices gone) unless the keeper took them
  std::vector<UniqueFd> log_pipes;   // read ends of the emulators' log pipes, for the keeper
  std::vector<UniqueFd> handoffs;    // read ends of the emulators' handoff pipes, for the keeper
  std::vector<std::string> logs;     // each vTPM's launch measurement, as its emulator made it
  std::vector<ContainerNode> nodes;  // what the container's /dev gets
  // Every state directory first (created, checked, provisioned): a bad one fails the setup
  // before any process is forked for it.
  std::vector<StateDir> dirs;
  for (const auto& spec : specs) {
    // A state dir of root's (one an earlier version's emulator, running as root, wrote) goes
    // to the emulator user; one of another user is refused.
    StateDir dir = open_state_dir(spec.state_root, spec.state_path, /*create=*/true,
                                  run_as[spec.index], /*adopt_root_owned=*/!spec.run_as);
    if (dir.created)
      rollback.add([root = spec.state_root, p = spec.state_path] { remove_state_dir(root, p); });
    if (spec.create_certs)
      provision_certificates(dir.fd.get(), spec, run_as[spec.index], opts, state.id);
    dirs.push_back(std::move(dir));
  }
  // Emulators and the keeper from the template: only with a cgroup, whose keeper relays the
  // emulators' logs (an emulator from the template holds no host file).
  const bool use_template = defaults.policy.use_template && cgroup;
  TemplateUse template_use{opts.run_root,
                           std::chrono::seconds(defaults.policy.template_idle_seconds),
                           opts.log_level, opts.log_file};
  const KeeperOptions keeper_opts{state.id, opts.log_level, opts.log_file,
                                  cgroup ? empty_dir(opts.run_root) : "", emu_user};
  // The keeper first: it sandboxes itself while the emulators start.
  std::optional<PendingKeeper> keeper;
  if (use_template)
    if (auto child = fork_from_template(template_use)) try {
        keeper.emplace(std::move(*child), keeper_opts);
      } catch (const Error& e) {
        spdlog::warn("the template's keeper did not take its options ({}): the hook forks it",
                     e.what());
      }
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& spec = specs[i];
    StateDir& dir = dirs[i];
    VtpmRecord vr;
    vr.index = spec.index;
    vr.version = spec.version;
    vr.state_path = spec.state_path;
    vr.state_root = spec.state_root;
    vr.state_path_managed = spec.state_path_managed;
    vr.state_path_created = dir.created;
    vr.state_dir = dir.id;  // teardown, gc and status act on this directory only

    EmulatorOptions eo{spec.index,         spec.version,         spec.state_path,
                       spec.pcr_banks,     !spec.open_platform,  state.id,
                       opts.log_level,     opts.log_file,        -1,
                       run_as[spec.index], load_state_key(spec), opts.vtpmx};
    eo.resume = restore;
    eo.self_test_on_demand = defaults.policy.self_test_on_demand;
    if (measure_pcr)
      eo.measurement = LaunchMeasurement{
          *measure_pcr, [&](const std::vector<std::string>& banks) {
            if (launch.empty())
              launch = launch_events(config.document, defaults.policy.measurement_image, banks);
            else
              add_bank_digests(launch, banks);  // (another vTPM's banks)
            std::vector<EventDigests> d;
            for (const auto& e : launch) d.push_back(e.digests);
            return d;
          }};
    // With a keeper, the emulator logs through it (it holds no host file) and hands the device
    // over to it before it saves the state. Only the emulator holds the write ends.
    UniqueFd log_wr, handoff_wr;
    if (cgroup) {
      Pipe log_pipe = make_pipe();
      if (::fcntl(log_pipe.write.get(), F_SETFL, O_NONBLOCK) != 0)
        throw sys_error("fcntl O_NONBLOCK");
      eo.log_pipe = log_pipe.write.get();
      log_pipes.push_back(std::move(log_pipe.read));
      log_wr = std::move(log_pipe.write);
      Pipe handoff = make_pipe();
      eo.handoff_pipe = handoff.write.get();
      handoffs.push_back(std::move(handoff.read));
      handoff_wr = std::move(handoff.write);
    }
    spdlog::debug("starting the emulator for {}", spec.state_path);
    std::optional<ForkedChild> forked;
    if (use_template)  // (a template's child logs to its keeper)
      forked = fork_from_template(template_use);
    auto [emu, tpm_num, server_fd, banks] =
        spawn_emulator(eo, std::move(dir.fd), container_pidfd.get(), std::move(forked));
    log_wr.reset();
    handoff_wr.reset();
    eo.key.reset();  // wiped: the next emulator must not inherit this TPM's key
    emulators.push_back(std::move(emu));
    server_fds.push_back(std::move(server_fd));
    vr.host_tpm_num = tpm_num;
    vr.emulator_pid = emulators.back().pid();
    // Read while its pidfd is held and it is unreaped: this is the emulator's.
    vr.emulator_start_time = process_start_time(vr.emulator_pid).value_or(0);
    spdlog::debug("emulator {} serves tpm{}", vr.emulator_pid, tpm_num);
    const HostDevices host = wait_for_registration(emulators.back(), vr.host_tpm_num, spec.version,
                                                   kRegistrationTimeout);
    vr.host_device = "/dev/tpm" + std::to_string(host.tpm_num);
    restrict_host_nodes(host);

    const size_t first = nodes.size();
    nodes.push_back({dev_name("tpm", spec.index), host.tpm, vr.host_device});
    if (host.tpmrm)
      nodes.push_back({dev_name("tpmrm", spec.index), *host.tpmrm,
                       "/dev/tpmrm" + std::to_string(host.tpm_num)});
    // (restore: the checkpoint's /dev is not there yet; see place_after_restore)
    for (size_t n = first; n < nodes.size() && !restore; ++n) {
      place_device_node(pid, config.root_path, nodes[n].name, nodes[n].dev, nodes[n].host_node);
      rollback.add([=, root = config.root_path, name = nodes[n].name] {
        remove_device_node(pid, root, name);
      });
    }
    vr.container_device = "/dev/" + nodes[first].name;
    if (measure_pcr) logs.push_back(cel_log(launch, *measure_pcr, banks));
    granted.push_back(host.tpm);
    if (host.tpmrm) granted.push_back(*host.tpmrm);
    spdlog::info("container {}: {} ({}:{}) is the container's {} (TPM {}, state {}, emulator {})",
                 state.id, vr.host_device, host.tpm.major, host.tpm.minor, vr.container_device,
                 to_string(spec.version), spec.state_path, vr.emulator_pid);
    rec.vtpms.push_back(vr);
  }
  if (opts.device_cgroup) spdlog::debug("{}", grant_device_access(pid, granted));
  if (cgroup) rec.cgroup = cgroup->dir();  // gc: a record whose cgroup is gone is stale
  write_run_record(opts.run_root, rec);
  rollback.add([&] { remove_run_record(opts.run_root, state.id); });
  // The logs after the record, whose removal (teardown, gc, rollback) takes them too: a setup
  // killed at any point leaves none without a record. The host's copy, and the container's
  // (read-only) at a fixed path, in place before the workload starts.
  std::vector<ReadonlyFile> container_logs;
  for (size_t i = 0; i < logs.size(); ++i) {
    write_measurement_log(opts.run_root, state.id, specs[i].index, logs[i]);
    container_logs.push_back({container_log_name(specs[i].index), logs[i]});
  }
  if (!container_logs.empty() && !restore)
    place_readonly_files(pid, config.root_path, kContainerLogDir, container_logs);
  if (cgroup) {
    std::vector<KeptDevice> kept;
    for (size_t i = 0; i < specs.size(); ++i)
      kept.push_back({.server_fd = server_fds[i].get(),
                      .emulator_pidfd = emulators[i].pidfd(),
                      .version = specs[i].version,
                      .log_fd = log_pipes[i].get(),
                      .handoff_fd = handoffs[i].get()});
    if (keeper)
      keeper->hand_over(kept, *cgroup);
    else
      spawn_keeper(std::move(kept), *cgroup, keeper_opts);
  }
  if (restore) place_after_restore(pid, nodes, container_logs, opts);
  server_fds.clear();  // the emulators and the keeper hold the devices now
  for (auto& e : emulators) e.release();
  rollback.commit();
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  spdlog::info("container {}: setup took {} ms", state.id, ms);
}

}  // namespace vtpm
