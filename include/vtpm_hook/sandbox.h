#pragma once
// Confines an emulator once its privileged steps are done: it then only serves its TPM.

namespace vtpm {

// no_new_privs, every capability dropped, and a seccomp allow-list of what the serve loop and
// crash-safe state writes need. Calls that only an attacker would make (exec, fork, ptrace,
// mount, namespaces, sockets, bpf, modules) kill the process; anything else unlisted fails
// with EPERM. Throws Error when the sandbox cannot be set up.
void enter_emulator_sandbox();

}  // namespace vtpm
