#pragma once
// Garbage collection of default state directories: <state-root>/<id> and <id>@tpm<i> that no
// live container uses and that have not been used for a while.
#include <chrono>
#include <ostream>
#include <string>

#include "hook/hooks.h"

namespace vtpm {

struct GcOptions {
  std::chrono::seconds unused_for = std::chrono::hours(24 * 30);
  bool dry_run = false;
};

// "30d", "12h", "90m", "45s", "2w" or "0". Throws Error.
std::chrono::seconds parse_duration(const std::string& text);

// Removes (with dry_run: only lists) every default state dir under opts.state_root that
//  - is named <id> or <id>@tpm<i> for a valid container id, and is not the CA's directory,
//  - holds nothing but the TPM's own files,
//  - is named by no run record under opts.run_root (neither as a statePath nor by its id),
//  - has no state blob newer than unused_for (without blobs: the directory's own mtime),
//  - and whose state lock gc can take without waiting; it holds the lock while removing, so
//    an emulator starting at that moment fails instead of serving a vanishing state.
// First it removes the run records of containers gone for good whose teardown never came:
// the recorded (v2) cgroup no longer exists, no emulator of theirs lives, older than
// unused_for; their state dirs are then judged like any other.
// One line per (would-be) removed record or directory goes to `out`; each that could not be
// examined or removed is one error log line. Returns how many failed.
unsigned run_gc(const HookOptions& opts, const GcOptions& gc, std::ostream& out);

}  // namespace vtpm
