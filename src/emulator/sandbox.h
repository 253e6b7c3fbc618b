#pragma once
// Confines an emulator once its privileged steps are done: it then only serves its TPM.

#include <sys/types.h>

#include <string>

#include "common/credentials.h"

namespace vtpm {

// Makes dir_fd (the TPM's state directory) the process's root: after its TPM is loaded the
// emulator needs no other file, and without CAP_SYS_CHROOT it cannot leave. Throws Error.
void confine_to_dir(int dir_fd);

// Permanently becomes creds: supplementary groups, gid, uid. Throws Error.
void become(const Credentials& creds);

// no_new_privs, every capability dropped, and a seccomp allow-list of what the serve loop and
// crash-safe state writes need: fcntl only with the fd-flag, lock and F_DUPFD_CLOEXEC commands
// (F_SETFL without O_ASYNC; no F_SETOWN/F_SETSIG/F_NOTIFY/F_SETLEASE: those signal other
// processes), kill/tgkill/tkill/rt_(tg)sigqueueinfo only to itself (abort()), prlimit only on
// itself, recvmsg to take the proxy fd. Calls that only an attacker would make (exec, fork,
// ptrace, process_vm_*, pidfd_open/getfd, mount, namespaces, sockets, bpf, modules, inotify,
// fanotify, links, mknod) kill the process; anything else unlisted (ioctl, chmod, chown,
// pidfd_send_signal, ...) fails with EPERM. Throws Error when the sandbox cannot be set up.
void enter_emulator_sandbox();

}  // namespace vtpm
