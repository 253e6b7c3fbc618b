#pragma once
// The template process: one per run root, holding no secret, with libtpms and OpenSSL loaded
// and warmed by a throwaway TPM. It forks emulators and keepers, which share its pages
// (docs/benchmarks.md) and start without the hook's heap, from code already translated where
// the hook's is new at every exec (under emulation: docs/benchmarks.md). It never sees a
// tenant's options, key or state: the hook passes it one end of a socket and its cgroup's
// directory, gets back the pidfd of a child born in that cgroup (clone3), and sends the child
// everything else directly (child_from_template).
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>

#include "emulator/emulator_process.h"

namespace vtpm {

// `vtpm-hook template`: serves <run_root>/template.sock (root only) until SIGTERM or SIGINT, or
// until idle_exit has passed with no request and no child alive (0: never). A second template
// of the same run root exits at once (false: nothing served). Throws Error.
struct TemplateOptions {
  std::string run_root;
  std::chrono::seconds idle_exit{0};
  bool quiet_if_taken = false;  // started by a hook: another template serving is no error
};
bool run_template(const TemplateOptions& opts);

// How a hook uses the template (the administrator's policy "template").
struct TemplateUse {
  std::string run_root;
  std::chrono::seconds idle_exit{60};  // of a template this hook starts
  std::string log_level;
  std::string log_file;
  // The template this setup found usable (pid, start time): its next requests skip the checks.
  std::optional<std::pair<pid_t, unsigned long long>> checked{};
  // None was: the rest of the setup does not ask again (nor starts another).
  bool unusable = false;
};

// A child of the template, born in this process's cgroup, waiting for its options
// (spawn_emulator or PendingKeeper).
// nullopt when there is no usable template: none runs (one is started when its orphan would
// land at PID 1, for the next setup: runtimes that are subreapers wait for their adopted
// children), it is stale (a library or the binary it mapped was replaced on disk: it is then
// told to exit), it runs another binary, cgroup v2 is missing, or it failed. Never throws.
// (The caller logs what the child became: spawn_emulator, PendingKeeper::hand_over.)
std::optional<ForkedChild> fork_from_template(TemplateUse& use);

// Why the template process `pid` must not be used any more: the first of its mapped files
// (libraries, the binary) that is no longer the file at its path, or was changed after the
// process started. nullopt: none. Throws Error when its maps cannot be read.
std::optional<std::string> stale_mapping(pid_t pid);

std::string template_socket_path(const std::string& run_root);

}  // namespace vtpm
