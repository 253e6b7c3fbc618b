#include "emulator/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>

#include "common/error.h"

namespace vtpm {
namespace {

// The serve loop, libtpms + OpenSSL, malloc, spdlog and StateStore's write-fsync-rename.
constexpr const char* kAllowed[] = {"read",         "write",           "readv",
                                    "writev",       "pread64",         "pwrite64",
                                    "poll",         "ppoll",           "close",
                                    "openat",       "fstat",           "newfstatat",
                                    "statx",        "lseek",           "fsync",
                                    "fdatasync",    "renameat",        "renameat2",
                                    "rename",       "unlinkat",        "unlink",
                                    "mmap",         "munmap",          "mremap",
                                    "brk",          "madvise",         "mprotect",
                                    "futex",        "getrandom",       "clock_gettime",
                                    "clock_getres", "gettimeofday",    "clock_nanosleep",
                                    "nanosleep",    "gettid",          "getpid",
                                    "getuid",       "geteuid",         "getgid",
                                    "getegid",      "rt_sigprocmask",  "rt_sigreturn",
                                    "sched_yield",  "restart_syscall", "exit",
                                    "exit_group",   "uname",           "sysinfo",
                                    "getdents64",   "recvmsg",         "sched_getaffinity",
                                    "access",       "faccessat",       "faccessat2"};

// Fatal: an emulator never does these, an exploited one would.
constexpr const char* kKill[] = {"execve",
                                 "execveat",
                                 "fork",
                                 "vfork",
                                 "clone",
                                 "clone3",
                                 "ptrace",
                                 "process_vm_readv",
                                 "process_vm_writev",
                                 "pidfd_open",
                                 "pidfd_getfd",
                                 "inotify_init",
                                 "inotify_init1",
                                 "inotify_add_watch",
                                 "fanotify_init",
                                 "fanotify_mark",
                                 "link",
                                 "linkat",
                                 "symlink",
                                 "symlinkat",
                                 "mount",
                                 "umount2",
                                 "pivot_root",
                                 "chroot",
                                 "setns",
                                 "unshare",
                                 "socket",
                                 "socketpair",
                                 "connect",
                                 "bind",
                                 "listen",
                                 "accept",
                                 "accept4",
                                 "bpf",
                                 "init_module",
                                 "finit_module",
                                 "delete_module",
                                 "kexec_load",
                                 "kexec_file_load",
                                 "open_by_handle_at",
                                 "name_to_handle_at",
                                 "keyctl",
                                 "add_key",
                                 "request_key",
                                 "perf_event_open",
                                 "userfaultfd",
                                 "setuid",
                                 "setgid",
                                 "setreuid",
                                 "setregid",
                                 "setresuid",
                                 "setresgid",
                                 "capset",
                                 "mknod",
                                 "mknodat",
                                 "io_uring_setup",
                                 "memfd_create"};

// fcntl: the commands the code and glibc use. Refused (EPERM, the default): F_SETOWN(_EX),
// F_SETSIG, F_NOTIFY, F_SETLEASE, F_SETPIPE_SZ, F_DUPFD, ...: F_SETOWN + F_SETSIG + F_NOTIFY
// or O_ASYNC sends any signal to any process the kernel's sigio check accepts (euid 0: all).
constexpr int kFcntlAllowed[] = {F_GETFD,  F_SETFD,     F_GETFL,     F_GETLK,      F_SETLK,
                                 F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_DUPFD_CLOEXEC};

// Signals only to itself: its pid is fixed once the filter is in (glibc's abort() is
// tgkill(getpid(), gettid(), SIGABRT); raise() the same). Everything else, the calls on pidfds
// included, fails with EPERM.
constexpr const char* kSignalSelf[] = {"kill", "tgkill", "tkill", "rt_sigqueueinfo",
                                       "rt_tgsigqueueinfo"};

void add_rule(scmp_filter_ctx ctx, uint32_t action, int nr, const char* what,
              std::initializer_list<scmp_arg_cmp> cmp) {
  if (seccomp_rule_add_array(ctx, action, nr, static_cast<unsigned>(cmp.size()), cmp.begin()) != 0)
    throw Error(std::string("seccomp: cannot add the rule for ") + what);
}

// Needs CAP_SETPCAP: done before the process gives up its uid (become), and again in
// drop_capabilities for a process that stays root.
void drop_bounding_set() {
  for (int cap = 0; cap <= 63; ++cap) {
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0) break;  // past the kernel's last cap
    (void)::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);  // fails without CAP_SETPCAP: nothing to drop
  }
}

void drop_capabilities() {
  drop_bounding_set();
  (void)::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);  // capset below clears all
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capset, &hdr, data) != 0) throw sys_error("drop capabilities");
}

}  // namespace

void confine_to_dir(int dir_fd) {
  if (::fchdir(dir_fd) != 0) throw sys_error("fchdir to the state dir");
  if (::chroot(".") != 0) throw sys_error("chroot to the state dir");
}

void become(const Credentials& creds) {
  drop_bounding_set();  // while it still can: an unprivileged uid keeps no way to get them back
  const gid_t groups[] = {creds.gid};
  if (::setgroups(1, groups) != 0) throw sys_error("setgroups");
  if (::setresgid(creds.gid, creds.gid, creds.gid) != 0) throw sys_error("setresgid");
  if (::setresuid(creds.uid, creds.uid, creds.uid) != 0) throw sys_error("setresuid");
}

void enter_emulator_sandbox() {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw sys_error("PR_SET_NO_NEW_PRIVS");
  drop_capabilities();
  std::unique_ptr<void, void (*)(scmp_filter_ctx)> ctx(seccomp_init(SCMP_ACT_ERRNO(EPERM)),
                                                       seccomp_release);
  if (!ctx) throw Error("seccomp_init failed");
  for (const char* name : kAllowed) {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr != __NR_SCMP_ERROR && seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, nr, 0) != 0)
      throw Error(std::string("seccomp: cannot allow ") + name);
  }
  // Limits of its own process only (glibc's getrlimit/setrlimit pass pid 0): a compromised
  // emulator must not lower another process's limits, even one of its own uid.
  add_rule(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), "prlimit64", {SCMP_A0(SCMP_CMP_EQ, 0)});
  for (const int cmd : kFcntlAllowed)
    add_rule(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(fcntl), "fcntl",
             {SCMP_A1(SCMP_CMP_EQ, static_cast<scmp_datum_t>(cmd))});
  add_rule(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(fcntl), "fcntl F_SETFL",
           {SCMP_A1(SCMP_CMP_EQ, F_SETFL), SCMP_A2(SCMP_CMP_MASKED_EQ, O_ASYNC, 0)});
  const auto self = static_cast<scmp_datum_t>(::getpid());
  for (const char* name : kSignalSelf)
    add_rule(ctx.get(), SCMP_ACT_ALLOW, seccomp_syscall_resolve_name(name), name,
             {SCMP_A0(SCMP_CMP_EQ, self)});
  for (const char* name : kKill) {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr != __NR_SCMP_ERROR && seccomp_rule_add(ctx.get(), SCMP_ACT_KILL_PROCESS, nr, 0) != 0)
      throw Error(std::string("seccomp: cannot forbid ") + name);
  }
  if (const int rc = seccomp_load(ctx.get()); rc != 0) throw sys_error("seccomp_load", -rc);
}

}  // namespace vtpm
