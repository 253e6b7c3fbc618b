#pragma once
// Finding a TPM's state directory beneath an allowed root without letting anything inside the
// root (a symlink, a mount point, a racing setup) send the hook elsewhere.
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/credentials.h"
#include "common/tpm_version.h"
#include "common/unique_fd.h"

namespace vtpm {

// Which directory: what setup records, so that later steps act on that one and no other.
struct DirId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const DirId&) const = default;
};

struct StateDir {
  UniqueFd fd;           // O_DIRECTORY, read-only
  bool created = false;  // this call made the directory itself (mkdir won, O_EXCL-like)
  DirId id;
};

// Opens `path`, strictly beneath `root` (both absolute and normalised), walking from root's fd
// with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV).
// With create, the root (0755) and missing directories are made: intermediate ones 0755, the
// state dir 0700 and, when this call made it, owned by `owner`. An existing state dir must
// already belong to owner's uid; with adopt_root_owned, one of root's (an emulator that ran as
// root wrote it) is given to owner first, with the TPM's own files in it (regular files with one
// link only: never a file linked in from elsewhere). Throws Error.
StateDir open_state_dir(const std::string& root, const std::string& path, bool create,
                        const std::optional<Credentials>& owner = std::nullopt,
                        bool adopt_root_owned = false);

// For teardown, gc and status: the directory setup opened, reached again as open_state_dir
// does (never creating) and refused, with an Error naming both, when it is not `recorded`
// any more (replaced by another directory). Unknown (a record older than the field): any.
StateDir reopen_state_dir(const std::string& root, const std::string& path,
                          const std::optional<DirId>& recorded);

// Removes what a TPM keeps in its state dir (swtpm's file names for TPM 1.2 and 2, their temp
// files, the lock) and then the dir if that left it empty. Never recurses, never follows a
// link; with `recorded`, touches nothing unless the dir still is that one (reopen_state_dir).
// Returns false (nothing else touched) when the dir holds other files. Throws Error.
bool remove_state_dir(const std::string& root, const std::string& path,
                      const std::optional<DirId>& recorded = std::nullopt);

// For gc. The newest modification time of the TPM's state blobs (permall, volatilestate,
// savestate of either TPM family; not the lock) in an open state dir; nullopt when it has none.
std::optional<std::chrono::system_clock::time_point> newest_state_blob_time(int dir_fd);

// What makes a `v` TPM, in its state dir: the permanent state first, then the volatile state,
// the TPM 1.2 savestate and the host's copy of the EK certificates.
std::vector<std::string> tpm_state_files(TpmVersion v);

// Whether an open directory holds nothing but regular files that remove_state_dir removes.
bool holds_only_tpm_files(int dir_fd);

}  // namespace vtpm
