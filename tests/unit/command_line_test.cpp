// The hooks' own command-line parser: whatever it accepts, CLI11 (with the same option tables)
// parses to the same options; whatever is unusual it leaves to CLI11.
#include "hook/command_line.h"

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <vector>

namespace vtpm {
namespace {

using Kind = HookCommand::Kind;

struct Parsed {
  HookOptions opts;
  HookCommand cmd;
};

std::vector<const char*> argv_of(const std::vector<std::string>& args) {
  std::vector<const char*> v{"vtpm-hook"};
  for (const auto& a : args) v.push_back(a.c_str());
  return v;
}

// What main's CLI11 path makes of args (nullopt: a parse error)
std::optional<Parsed> with_cli11(const std::vector<std::string>& args) {
  Parsed p;
  CLI::App app;
  app.require_subcommand(1);
  app.fallthrough();
  add_global_options(app, p.opts);
  const HookSubcommands subs = add_hook_subcommands(app, p.cmd);
  const auto argv = argv_of(args);
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError&) {
    return std::nullopt;
  }
  p.opts.policy_required = app.get_option("--policy")->count() > 0;
  p.cmd.kind = subs.chosen().value();
  return p;
}

std::optional<Parsed> fast(const std::vector<std::string>& args) {
  Parsed p;
  const auto argv = argv_of(args);
  const auto cmd = parse_hook_command({argv.begin() + 1, argv.end()}, p.opts);
  if (!cmd) return std::nullopt;
  p.cmd = *cmd;
  return p;
}

void expect_same(const Parsed& a, const Parsed& b) {
  for (const GlobalOption& g : kGlobalOptions)
    EXPECT_EQ(a.opts.*g.field, b.opts.*g.field) << g.name;
  EXPECT_EQ(a.opts.policy_required, b.opts.policy_required);
  EXPECT_EQ(a.cmd.kind, b.cmd.kind);
  EXPECT_EQ(a.cmd.no_device_cgroup, b.cmd.no_device_cgroup);
  EXPECT_EQ(a.cmd.default_version, b.cmd.default_version);
  EXPECT_EQ(a.cmd.default_banks, b.cmd.default_banks);
  EXPECT_EQ(a.cmd.default_certs, b.cmd.default_certs);
}

TEST(HookCommandLine, AcceptsWhatHookEntriesUseAsCli11Does) {
  const std::vector<std::vector<std::string>> accepted = {
      {"setup"},
      {"prestart"},
      {"createRuntime"},
      {"teardown"},
      {"poststop"},
      {"hook"},
      {"--state-root", "/srv/tpm", "--log-file", "/var/log/v.log", "setup"},
      {"--state-root=/srv/tpm", "--run-root=/run/x", "--log-level=debug", "poststop"},
      {"--policy", "/etc/p.json", "hook", "--no-device-cgroup"},
      {"setup", "--log-level", "debug", "--vtpmx", "/dev/vtpmx2"},  // globals after the command
      {"--ca-key", "/k.pem", "--ca-cert", "/c.pem", "--emulator-user", "1000:1000", "setup",
       "--default-version", "1.2"},
      {"hook", "--default-version=2", "--default-pcr-banks", "sha256,sha384",
       "--default-create-certs"},
      {"createRuntime", "--default-pcr-banks=sha1", "--no-device-cgroup"},
      {"--log-file", "/var/log/v=1.log", "teardown"},  // '=' inside a spaced value
  };
  for (const auto& args : accepted) {
    SCOPED_TRACE(::testing::PrintToString(args));
    const auto a = fast(args);
    const auto b = with_cli11(args);
    ASSERT_TRUE(a.has_value());
    ASSERT_TRUE(b.has_value());
    expect_same(*a, *b);
  }
}

TEST(HookCommandLine, LeavesEverythingElseToCli11) {
  const std::vector<std::vector<std::string>> refused = {
      {},
      {"--help"},
      {"setup", "--help"},
      {"-h", "setup"},
      {"--version"},
      {"status"},
      {"ek", "--id", "x"},
      {"template"},
      {"setup", "teardown"},                                  // two commands
      {"setup", "extra"},                                     // a positional
      {"setup", "--bogus"},                                   // unknown option
      {"--no-device-cgroup", "setup"},                        // a setup option before the command
      {"teardown", "--no-device-cgroup"},                     // teardown has none
      {"setup", "--default-version", "3"},                    // not a version
      {"setup", "--default-version"},                         // no value
      {"--log-level", "--run-root", "/x", "setup"},           // a value that looks like an option
      {"--log-file", "setup", "setup"},                       // a value that is a command
      {"--log-file=", "setup"},                               // empty
      {"--log-level", "debug", "--log-level=info", "setup"},  // twice
      {"setup", "--no-device-cgroup=true"},                   // a flag with a value
      {"setup", "--", "x"},
  };
  for (const auto& args : refused) {
    SCOPED_TRACE(::testing::PrintToString(args));
    HookOptions opts;
    opts.log_level = "untouched";
    const auto argv = argv_of(args);
    EXPECT_FALSE(parse_hook_command({argv.begin() + 1, argv.end()}, opts).has_value());
    EXPECT_EQ(opts.log_level, "untouched");
  }
  // Of those, the ones CLI11 refuses too get its error (a hook entry with a typo fails loudly).
  EXPECT_FALSE(with_cli11({"setup", "--bogus"}).has_value());
  EXPECT_FALSE(with_cli11({"setup", "--default-version", "3"}).has_value());
  EXPECT_FALSE(with_cli11({"teardown", "--no-device-cgroup"}).has_value());
}

}  // namespace
}  // namespace vtpm
