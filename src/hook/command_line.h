#pragma once
// The command line of what runtimes run (setup, teardown, hook and their aliases): the
// administrator's global options and the setup options, declared once here, for CLI11 (main.cpp)
// and for parse_hook_command, which reads the plain forms a hook entry uses without CLI11.
#include <array>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "hook/hooks.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace vtpm {

// One of the options every command takes; all are strings.
struct GlobalOption {
  std::string_view name;
  std::string HookOptions::*field;
  std::string_view help;
  bool show_default;
  bool is_path;  // (made absolute in the CDI spec's hook arguments)
};
extern const std::array<GlobalOption, 9> kGlobalOptions;

struct HookCommand {
  enum class Kind { Setup, Teardown, ByStatus };
  Kind kind = Kind::Setup;
  // setup and hook only
  bool no_device_cgroup = false;
  std::string default_version = "2";
  std::string default_banks;
  bool default_certs = false;
};

// Adds the global options to `app` (their Option*s in kGlobalOptions' order) and the three hook
// subcommands, whose options write into `cmd`.
std::array<CLI::Option*, 9> add_global_options(CLI::App& app, HookOptions& opts);
struct HookSubcommands {
  CLI::App* setup;
  CLI::App* teardown;
  CLI::App* by_status;
  // the kind of the one argv chose, if any
  std::optional<HookCommand::Kind> chosen() const;
};
HookSubcommands add_hook_subcommands(CLI::App& app, HookCommand& cmd);

// argv after the program name, when it is a hook command in the forms a hook entry uses:
// --name value or --name=value, each option at most once, setup options after the command.
// Fills `opts` and returns the command; anything else (other commands, help, errors, an
// unusual form) is nullopt and leaves `opts` alone: CLI11 parses those, and tells what is wrong.
// Why: the runtime starts this binary twice per container, and under emulation building
// CLI11's parser of every command was a third of a hook's start.
std::optional<HookCommand> parse_hook_command(std::span<const char* const> args, HookOptions& opts);

}  // namespace vtpm
