#include "hook/command_line.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <vector>

namespace vtpm {

const std::array<GlobalOption, 9> kGlobalOptions{{
    {"--state-root", &HookOptions::state_root, "Where TPM state lives by default", true, true},
    {"--run-root", &HookOptions::run_root, "Where run records of live vTPMs live", true, true},
    {"--log-file", &HookOptions::log_file, "Append logs to this file (also the emulators')", false,
     true},
    {"--log-level", &HookOptions::log_level, "trace, debug, info, warn, error or off", true, false},
    {"--vtpmx", &HookOptions::vtpmx, "The kernel's vTPM proxy control device", true, true},
    {"--policy", &HookOptions::policy,
     "The administrator's policy file (what annotations may choose, where state may live); "
     "missing at the default path: defaults",
     true, true},
    {"--ca-key", &HookOptions::ca_key,
     "EK certificate CA key (PEM); created with --ca-cert when both are missing "
     "[<state-root>/ca/ek-ca-key.pem]",
     false, true},
    {"--ca-cert", &HookOptions::ca_cert,
     "EK certificate CA certificate (PEM) [<state-root>/ca/ek-ca-cert.pem]", false, true},
    {"--emulator-user", &HookOptions::emulator_user,
     "User (name, uid or uid:gid; never root) the emulators and keepers run as, unless a "
     "vTPM's runAs names another",
     true, false},
}};

namespace {

using Kind = HookCommand::Kind;

// setup's and hook's options: a value (`value`) or a flag (`flag`)
struct SetupOption {
  std::string_view name;
  std::string HookCommand::*value;
  bool HookCommand::*flag;
  std::string_view help;
  std::vector<std::string> choices;  // (empty: any value)
};
const std::array<SetupOption, 4> kSetupOptions{{
    {"--no-device-cgroup",
     nullptr,
     &HookCommand::no_device_cgroup,
     "Leave the container's device cgroup alone (config.json allows the TPMs)",
     {}},
    {"--default-version",
     &HookCommand::default_version,
     nullptr,
     "TPM version when config.json and annotations ask for nothing in particular",
     {"2", "1.2"}},
    {"--default-pcr-banks",
     &HookCommand::default_banks,
     nullptr,
     "PCR banks of that default TPM",
     {}},
    {"--default-create-certs",
     nullptr,
     &HookCommand::default_certs,
     "EKs and EK certificates in that default TPM",
     {}},
}};

struct CommandName {
  std::string_view name;
  Kind kind;
};
// Each kind's first name is its subcommand, the others its aliases (the OCI stage names).
constexpr std::array<CommandName, 6> kCommandNames{{{"setup", Kind::Setup},
                                                    {"prestart", Kind::Setup},
                                                    {"createRuntime", Kind::Setup},
                                                    {"teardown", Kind::Teardown},
                                                    {"poststop", Kind::Teardown},
                                                    {"hook", Kind::ByStatus}}};

CLI::App* add_subcommand(CLI::App& app, Kind kind, const std::string& help) {
  CLI::App* sub = nullptr;
  for (const auto& c : kCommandNames) {
    if (c.kind != kind) continue;
    if (!sub)
      sub = app.add_subcommand(std::string(c.name), help);
    else
      sub->alias(std::string(c.name));
  }
  return sub;
}

template <typename T>
const T* find_named(const auto& table, std::string_view name) {
  const auto it = std::ranges::find(table, name, &T::name);
  return it == table.end() ? nullptr : &*it;
}

}  // namespace

std::array<CLI::Option*, 9> add_global_options(CLI::App& app, HookOptions& opts) {
  std::array<CLI::Option*, 9> added{};
  for (size_t i = 0; i < kGlobalOptions.size(); ++i) {
    const GlobalOption& g = kGlobalOptions[i];
    added[i] = app.add_option(std::string(g.name), opts.*g.field, std::string(g.help));
    if (g.show_default) added[i]->capture_default_str();
  }
  return added;
}

HookSubcommands add_hook_subcommands(CLI::App& app, HookCommand& cmd) {
  HookSubcommands subs{
      add_subcommand(app, Kind::Setup, "Give a container its vTPMs (OCI state on stdin)"),
      add_subcommand(app, Kind::Teardown, "Stop a container's vTPMs (OCI state on stdin)"),
      add_subcommand(
          app, Kind::ByStatus,
          "setup or teardown by the state's status (for hooks.d: one args list, all stages)")};
  for (CLI::App* sub : {subs.setup, subs.by_status}) {
    for (const SetupOption& o : kSetupOptions) {
      if (o.flag) {
        sub->add_flag(std::string(o.name), cmd.*o.flag, std::string(o.help));
        continue;
      }
      auto* opt = sub->add_option(std::string(o.name), cmd.*o.value, std::string(o.help));
      if (!o.choices.empty()) opt->check(CLI::IsMember(o.choices))->capture_default_str();
    }
  }
  return subs;
}

std::optional<HookCommand::Kind> HookSubcommands::chosen() const {
  if (setup->parsed()) return Kind::Setup;
  if (teardown->parsed()) return Kind::Teardown;
  if (by_status->parsed()) return Kind::ByStatus;
  return std::nullopt;
}

std::optional<HookCommand> parse_hook_command(std::span<const char* const> args,
                                              HookOptions& opts) {
  HookOptions o = opts;
  HookCommand cmd;
  bool have_command = false;
  std::vector<std::string_view> seen;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (!arg.starts_with("--")) {  // the command, once
      const auto* c = find_named<CommandName>(kCommandNames, arg);
      if (!c || have_command) return std::nullopt;
      cmd.kind = c->kind;
      have_command = true;
      continue;
    }
    const size_t eq = arg.find('=');
    const std::string_view name = arg.substr(0, eq);
    if (std::ranges::find(seen, name) != seen.end()) return std::nullopt;
    seen.push_back(name);
    const auto* global = find_named<GlobalOption>(kGlobalOptions, name);
    const auto* setup = have_command && cmd.kind != Kind::Teardown
                            ? find_named<SetupOption>(kSetupOptions, name)
                            : nullptr;
    if (setup && setup->flag) {
      if (eq != std::string_view::npos) return std::nullopt;
      cmd.*setup->flag = true;
      continue;
    }
    if (!global && !setup) return std::nullopt;
    std::string_view value;
    if (eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
    } else {
      if (i + 1 == args.size()) return std::nullopt;
      value = args[++i];
      if (value.starts_with('-') || find_named<CommandName>(kCommandNames, value))
        return std::nullopt;
    }
    if (value.empty()) return std::nullopt;
    if (global) {
      o.*global->field = value;
      if (name == "--policy") o.policy_required = true;
      continue;
    }
    if (!setup->choices.empty() && std::ranges::find(setup->choices, value) == setup->choices.end())
      return std::nullopt;
    cmd.*setup->value = value;
  }
  if (!have_command) return std::nullopt;
  opts = std::move(o);
  return cmd;
}

}  // namespace vtpm
