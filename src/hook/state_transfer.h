#pragma once
// vtpm-hook export / import: one TPM's state as a sealed archive (state/state_archive.h), for
// moving a container's TPM to another host or keeping a backup of it.
#include <string>

#include "hook/hooks.h"
#include "state/state_archive.h"

namespace vtpm {

struct TransferOptions {
  std::string id;          // the container whose default state dir is meant
  unsigned index = 0;      // its /dev/tpm<index>
  std::string state_path;  // or this state dir (absolute, beneath --state-root) instead
  std::string file;        // the archive; empty: stdout (export) or stdin (import)
  bool force = false;      // import: replace a state the destination already holds
};

// Refused while the TPM runs (its emulator holds the state dir's lock: the archive is a
// consistent snapshot of a stopped TPM). Throws Error.
void export_state(const HookOptions& opts, const TransferOptions& t, const ArchiveSecret& secret);
// Opens and checks the whole archive before it touches the destination; refuses a destination
// that holds a TPM's state unless t.force, a running TPM always, and an archive written by a
// newer libtpms than this host's. A failure leaves the destination as it was (a directory it
// made is removed). Throws Error.
void import_state(const HookOptions& opts, const TransferOptions& t, const ArchiveSecret& secret);

}  // namespace vtpm
