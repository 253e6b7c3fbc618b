// vtpm-hook: an OCI runtime hook that gives each container its own TPM.
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "common/error.h"
#include "common/io_util.h"
#include "common/logging.h"
#include "emulator/stream_emulator.h"
#include "emulator/template.h"
#include "hook/cdi.h"
#include "hook/command_line.h"
#include "hook/doctor.h"
#include "hook/ek_export.h"
#include "hook/gc.h"
#include "hook/hooks.h"
#include "hook/runtime_wrapper.h"
#include "hook/state_transfer.h"
#include "hook/status.h"
#include "oci/vtpm_request.h"
#include "tpm/local_ca.h"

namespace {

constexpr size_t kMaxStateSize = 1u << 20;

std::string read_stdin() {
  return vtpm::read_all(STDIN_FILENO, kMaxStateSize, "OCI state on stdin");
}

// Logging and the defaults that depend on other options; non-zero: the exit status.
int prepare(vtpm::HookOptions& opts) {
  if (opts.ca_key.empty()) opts.ca_key = opts.state_root + "/ca/ek-ca-key.pem";
  if (opts.ca_cert.empty()) opts.ca_cert = opts.state_root + "/ca/ek-ca-cert.pem";
  ::umask(077);  // state, run records and logs are private; device nodes get explicit modes
  try {
    vtpm::init_logging(opts.log_level, opts.log_file);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vtpm-hook: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

int run_hook_command(const vtpm::HookCommand& hook, vtpm::HookOptions& opts) {
  if (const int rc = prepare(opts); rc != 0) return rc;
  using Kind = vtpm::HookCommand::Kind;
  try {
    if (hook.kind == Kind::Teardown) {
      vtpm::run_teardown(read_stdin(), opts);
      return 0;
    }
    opts.device_cgroup = !hook.no_device_cgroup;
    opts.default_vtpm.version = *vtpm::parse_tpm_version(hook.default_version);  // checked
    if (!hook.default_banks.empty())
      opts.default_vtpm.pcr_banks =
          vtpm::parse_pcr_banks(hook.default_banks, "--default-pcr-banks");
    opts.default_vtpm.create_certs = hook.default_certs;
    vtpm::check_vtpm_choice(opts.default_vtpm, "--default-version");
    if (hook.kind == Kind::Setup)
      vtpm::run_setup(read_stdin(), opts);
    else
      vtpm::run_hook_by_status(read_stdin(), opts);
  } catch (const std::exception& e) {
    spdlog::error("{}", vtpm::one_line(e.what()));
    return 1;
  }
  return 0;
}

// Every command, with CLI11 (help, errors and the commands an administrator runs by hand).
int run_cli(int argc, char** argv, vtpm::HookOptions& opts) {
  CLI::App app{"vtpm-hook: an OCI runtime hook that gives each container its own TPM"};
  app.name("vtpm-hook");  // not argv[0]: the usage line is the man page's (help2man)
  app.set_version_flag("--version", std::string("vtpm-hook ") + VTPM_HOOK_VERSION);
  app.set_help_all_flag("--help-all", "Print the help of every subcommand and exit");
  app.require_subcommand(1);
  app.fallthrough();
  const auto globals = vtpm::add_global_options(app, opts);
  vtpm::HookCommand hook;
  const vtpm::HookSubcommands hooks = vtpm::add_hook_subcommands(app, hook);

  std::string state_dir;
  std::string tpm_version = "2";
  bool no_startup = false;
  std::string pcr_banks, key_file, password_file;
  bool create_certs = false;
  auto* emulate =
      app.add_subcommand("emulate", "Serve one TPM on stdin/stdout (raw command/response stream)");
  emulate->add_option("--state-dir", state_dir, "TPM state directory")->required();
  emulate->add_option("--tpm-version", tpm_version, "2 or 1.2")
      ->check(CLI::IsMember({"2", "1.2"}))
      ->capture_default_str();
  emulate->add_flag("--no-startup", no_startup, "Do not send TPM Startup before serving");
  auto* key_opt = emulate->add_option("--key-file", key_file,
                                      "Encrypt the state with this 32-byte AES-256 key");
  emulate
      ->add_option("--password-file", password_file,
                   "Encrypt the state with a key derived from this file (PBKDF2, as swtpm)")
      ->excludes(key_opt);
  emulate->add_flag("--create-certs", create_certs,
                    "On a new TPM: EKs and EK certificates signed by --ca-key/--ca-cert");
  emulate->add_option("--pcr-banks", pcr_banks,
                      "Allocate exactly these PCR banks, e.g. sha256,sha384");

  bool close_platform = false;
  emulate->add_flag("--close-platform", close_platform,
                    "After Startup, disable the platform hierarchy as the hook's emulators do");

  bool status_json = false;
  auto* status = app.add_subcommand("status", "List the live vTPMs recorded under --run-root");
  status->add_flag("--json", status_json, "One JSON array instead of a table");

  std::string ek_id;
  unsigned ek_index = 0;
  bool ek_json = false;
  auto* ek = app.add_subcommand(
      "ek", "Print a container's EK public keys and EK certificates (PEM) for a verifier");
  ek->add_option("--id", ek_id, "The container's id")->required();
  ek->add_option("--index", ek_index, "Which of its vTPMs (its /dev/tpm<index>)")
      ->capture_default_str();
  ek->add_flag("--json", ek_json, "One JSON object instead of PEM");
  std::string log_id;
  unsigned log_index = 0;
  bool log_replay = false;
  auto* log_cmd = app.add_subcommand(
      "log", "Print a running container's measured-launch event log (TCG CEL JSON) for a verifier");
  log_cmd->add_option("--id", log_id, "The container's id")->required();
  log_cmd->add_option("--index", log_index, "Which of its vTPMs (its /dev/tpm<index>)")
      ->capture_default_str();
  log_cmd->add_flag("--replay", log_replay,
                    "Print the PCR values the log replays to instead (JSON: pcr, banks)");
  // export / import: the administrator's key, never one a container's spec names
  vtpm::TransferOptions xfer;
  std::string xfer_key_file, xfer_password_file;
  auto* export_cmd = app.add_subcommand(
      "export", "Write a stopped container's TPM state as one sealed archive (AES-256-GCM)");
  auto* import_cmd = app.add_subcommand(
      "import", "Give a container the TPM state of an archive that export wrote");
  for (auto* c : {export_cmd, import_cmd}) {
    const bool out = c == export_cmd;
    auto* id = c->add_option("--id", xfer.id, "The container's id (its default state dir)");
    auto* sp = c->add_option("--state-path", xfer.state_path,
                             "Or this state dir, beneath --state-root (e.g. a pod's)");
    id->excludes(sp);
    sp->excludes(id);
    c->add_option("--index", xfer.index, "Which of its vTPMs (its /dev/tpm<index>)")
        ->capture_default_str();
    c->add_option(out ? "--output" : "--input", xfer.file,
                  out ? "The archive [stdout]" : "The archive [stdin]");
    c->add_option("--key-file", xfer_key_file, "AES-256 key: a file of exactly 32 bytes");
    c->add_option("--password-file", xfer_password_file,
                  "Or a password file (PBKDF2-HMAC-SHA512, the archive's own salt)");
  }
  import_cmd->add_flag("--force", xfer.force, "Replace the TPM state the destination holds");
  auto* ca_cmd = app.add_subcommand("ca", "Print the local CA's certificate (PEM)");
  std::string cdi_output, hook_path;
  bool cdi_no_cgroup = false;
  auto* cdi = app.add_subcommand(
      "cdi", "Print a CDI spec: devices vtpm-hook.io/tpm=2, =1.2 and the policy's cdiDevices");
  cdi->add_option("--output", cdi_output,
                  "Write it to this file (atomically), e.g. /etc/cdi/vtpm-hook.json");
  cdi->add_option("--hook-path", hook_path, "The hook's path in the spec [this executable]");
  cdi->add_flag("--no-device-cgroup", cdi_no_cgroup, "setup --no-device-cgroup in the spec");

  std::string unused_for = "30d";
  bool dry_run = false;
  auto* gc = app.add_subcommand(
      "gc",
      "Remove run records of containers gone without a teardown, then default state dirs "
      "under --state-root that no container used for a while");
  gc->add_option("--unused-for", unused_for, "Only state unused this long: 0, 90m, 12h, 30d, 2w")
      ->capture_default_str();
  gc->add_flag("--dry-run", dry_run, "Only list what would be removed");

  unsigned idle_exit = 0;
  bool started_by_hook = false;
  auto* template_cmd = app.add_subcommand(
      "template",
      "Serve as the template process that setups fork emulators from (<run-root>/template.sock; "
      "for a supervisor such as systemd: setups start one themselves where they can)");
  template_cmd
      ->add_option("--idle-exit", idle_exit,
                   "Exit after this many seconds with no child and no request (0: never)")
      ->capture_default_str();
  template_cmd->add_flag("--started-by-hook", started_by_hook,
                         "Another template serving is no error (how a setup starts one)");

  auto* doctor = app.add_subcommand(
      "doctor",
      "Check this host for vTPMs: one line per check (ok, info, warn or fail, with its fix); "
      "exit 1 when something blocks vTPMs, 2 when only warnings");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  opts.policy_required = app.get_option("--policy")->count() > 0;
  if (const auto kind = hooks.chosen()) {
    hook.kind = *kind;
    return run_hook_command(hook, opts);
  }
  if (const int rc = prepare(opts); rc != 0) return rc;
  try {
    if (*status) {
      std::fputs(vtpm::render_status(opts.run_root, status_json).c_str(), stdout);
    } else if (*ek) {
      const auto found = vtpm::find_ek_certificates(opts, ek_id, ek_index);
      std::fputs(vtpm::render_ek(found, ek_json).c_str(), stdout);
    } else if (*log_cmd) {
      std::fputs(vtpm::render_measurement_log(opts, log_id, log_index, log_replay).c_str(), stdout);
    } else if (*export_cmd || *import_cmd) {
      if (xfer.id.empty() == xfer.state_path.empty())
        throw vtpm::Error("give --id or --state-path");
      const auto secret = vtpm::load_archive_secret(xfer_key_file, xfer_password_file);
      if (*export_cmd)
        vtpm::export_state(opts, xfer, secret);
      else
        vtpm::import_state(opts, xfer, secret);
    } else if (*template_cmd) {
      vtpm::run_template(
          {opts.run_root, std::chrono::seconds(idle_exit), /*quiet_if_taken=*/started_by_hook});
    } else if (*ca_cmd) {
      std::fputs(vtpm::render_ca(opts).c_str(), stdout);
    } else if (*cdi) {
      vtpm::CdiOptions co;
      co.hook_path = hook_path.empty() ? std::filesystem::read_symlink("/proc/self/exe").string()
                                       : std::filesystem::absolute(hook_path).string();
      // The options the administrator gave, for both hooks; paths absolute (hooks run in the
      // bundle directory).
      for (size_t i = 0; i < globals.size(); ++i) {
        const vtpm::GlobalOption& g = vtpm::kGlobalOptions[i];
        const std::string& value = opts.*g.field;
        if (globals[i]->count() > 0)
          co.global_args.insert(
              co.global_args.end(),
              {std::string(g.name), g.is_path ? std::filesystem::absolute(value).string() : value});
      }
      if (cdi_no_cgroup) co.setup_args.push_back("--no-device-cgroup");
      co.devices = vtpm::cdi_devices(vtpm::load_policy(opts.policy, opts.policy_required));
      const std::string text = vtpm::make_cdi_spec(co).dump(2) + "\n";
      if (cdi_output.empty())
        std::fputs(text.c_str(), stdout);
      else
        vtpm::install_cdi_spec(cdi_output, text);
    } else if (*doctor) {
      const vtpm::DoctorReport report = vtpm::run_doctor(opts);
      for (const auto& f : report.findings) std::puts(vtpm::render_finding(f).c_str());
      return vtpm::doctor_exit_code(report);
    } else if (*gc) {
      vtpm::GcOptions go{vtpm::parse_duration(unused_for), dry_run};
      return vtpm::run_gc(opts, go, std::cout) == 0 ? 0 : 1;
    } else if (*emulate) {
      vtpm::StreamOptions so;
      so.state_dir = state_dir;
      so.version = *vtpm::parse_tpm_version(tpm_version);  // CLI11 checked it
      if (so.version != vtpm::TpmVersion::V2 && (create_certs || !pcr_banks.empty()))
        throw vtpm::Error("--create-certs and --pcr-banks need --tpm-version 2");
      so.startup = !no_startup;
      if (close_platform && (no_startup || so.version != vtpm::TpmVersion::V2))
        throw vtpm::Error("--close-platform needs --tpm-version 2 and Startup");
      so.close_platform = close_platform;
      if (!key_file.empty()) so.key = vtpm::load_key_file(key_file, "binary", 256);
      if (!password_file.empty())
        so.key = vtpm::derive_key_from_password_file(password_file, 256, "pbkdf2");
      std::optional<vtpm::LocalCa> ca;
      if (create_certs) {
        ca = vtpm::load_or_create_ca(opts.ca_key, opts.ca_cert);
        so.ca = &*ca;
      }
      if (!pcr_banks.empty()) so.pcr_banks = vtpm::parse_pcr_banks(pcr_banks, "--pcr-banks");
      return vtpm::run_stream_emulator(so);
    }
  } catch (const std::exception& e) {
    spdlog::error("{}", vtpm::one_line(e.what()));
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // No openssl.cnf: nothing here needs it (default provider only), and the emulators (forked
  // from this process or from a template, which inherits the choice) would read it at their
  // first EVP use, while the container waits for its TPM. No cleanup at exit either: the
  // kernel frees it all, and a hook's exit is on the container's start path.
  (void)OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG | OPENSSL_INIT_NO_ATEXIT, nullptr);
  // Invoked as vtpm-runc (the symlink `cmake --install` makes): an OCI runtime, not the CLI.
  if (argc > 0) {
    const std::string_view self = argv[0];
    if (self.substr(self.rfind('/') + 1) == vtpm::kWrapperName)
      return vtpm::run_runtime_wrapper(argc, argv);
  }
  vtpm::HookOptions opts;
  if (argc < 1) return run_cli(argc, argv, opts);  // (an exec with no argv[0])
  if (const auto hook = vtpm::parse_hook_command({argv + 1, argv + argc}, opts))
    return run_hook_command(*hook, opts);
  return run_cli(argc, argv, opts);
}
