#pragma once
// The only module that touches the container's filesystem: device nodes in its /dev, and the
// read-only files the host puts there (the measured launch's event log).
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/dev_num.h"
#include "common/unique_fd.h"

namespace vtpm {

// Makes <root>/dev/<name> the char device major:minor in the container's own mount namespace.
// Without a user namespace: mknod, reached through /proc/<pid>/root. With one (where nodes on
// the container's tmpfs cannot be opened): a bind mount of host_node, handed to the container's
// root user. Never follows a link out of the root; replaces a non-directory already at that
// name; verifies type and rdev afterwards. Throws Error.
void place_device_node(pid_t container_pid, const std::string& root_path, const std::string& name,
                       DevNum dev, const std::string& host_node, const std::string& proc = "/proc");

// Refuses a pid that shares the hook's mount namespace: it is not a container's process, and a
// device "put into its /dev" would land on the host.
void check_container_process(pid_t container_pid, const std::string& proc = "/proc");

// Same, with the container root given as an open directory fd (testable without a container).
void place_device_node_at(int root_fd, const std::string& name, DevNum dev);

struct ReadonlyFile {
  std::string name;  // a plain file name
  std::string content;
};
// Mounts a tmpfs holding `files` (mode 0444) read-only (nosuid, nodev, noexec) at
// <root>/<dir> in the container's mount namespace, making <dir> (relative to the root, e.g.
// "run/vtpm-hook") where missing, as the container's root user. Never follows a link out of
// the root. The container's copy: the host's stays where it is. Throws Error.
void place_readonly_files(pid_t container_pid, const std::string& root_path, const std::string& dir,
                          const std::vector<ReadonlyFile>& files,
                          const std::string& proc = "/proc");

// A container CRIU restores: while its hooks run, its mount namespace is still a copy of the
// host's; CRIU then builds the checkpoint's mounts (its /dev with the nodes of the checkpointed
// run) and pivots into them. Waits, up to `timeout`, until the process's root is no longer the
// host's and shows `marker` (e.g. "dev/tpm0", a node of the checkpoint) as a character device,
// and returns that root (O_PATH; for place_device_node_at). Empty: it never did, or the process
// is gone.
UniqueFd wait_for_restored_root(pid_t pid, const std::string& marker,
                                std::chrono::milliseconds timeout,
                                const std::string& proc = "/proc");

// Best effort removal (undo on failed setup).
void remove_device_node(pid_t container_pid, const std::string& root_path, const std::string& name,
                        const std::string& proc = "/proc");

}  // namespace vtpm
