// The emulator's seccomp sandbox, with real libtpms behind it, in forked children.
#include "emulator/sandbox.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>

#include "state/state_store.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

// Runs body in a child; returns its wait status.
int in_child(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

std::vector<uint8_t> command(uint32_t cc, std::vector<uint32_t> handles,
                             const std::vector<uint8_t>& params) {
  return proto::password_session_command(cc, handles, params);
}

std::vector<uint8_t> bytes(std::initializer_list<int> b) { return {b.begin(), b.end()}; }

uint32_t rc_of(const std::vector<uint8_t>& r) { return proto::response_code(r); }

TEST(Sandbox, ForbiddenCallKillsTheProcess) {
  const int status = in_child([] {
    enter_emulator_sandbox();
    ::socket(AF_INET, SOCK_STREAM, 0);
    return 0;
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}

// A compromised emulator must not lower another process's limits (swtpm's profile blocks this
// too); its own stay readable and settable, as glibc needs.
TEST(Sandbox, PrlimitOnlyOnItself) {
  const pid_t victim = ::fork();
  if (victim == 0) {
    ::pause();
    ::_exit(0);
  }
  const int status = in_child([victim] {
    enter_emulator_sandbox();
    rlimit lim{};
    if (::prlimit(0, RLIMIT_NOFILE, nullptr, &lim) != 0) return 10;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return 11;
    const rlimit low{1, 1};
    if (::prlimit(victim, RLIMIT_NOFILE, &low, nullptr) == 0) return 12;
    if (errno != EPERM) return 13;
    if (::prlimit(::getppid(), RLIMIT_NOFILE, nullptr, &lim) == 0) return 14;
    return 0;
  });
  rlimit after{};
  ASSERT_EQ(::prlimit(victim, RLIMIT_NOFILE, nullptr, &after), 0);
  ::kill(victim, SIGKILL);
  ::waitpid(victim, nullptr, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_GT(after.rlim_cur, 1u);  // the other process's limit is untouched
}

TEST(Sandbox, ExecKillsTheProcess) {
  const int status = in_child([] {
    enter_emulator_sandbox();
    char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
    ::execv("/bin/true", argv);
    return 3;
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}

TEST(Sandbox, UnlistedCallFailsWithEperm) {
  const int status = in_child([] {
    enter_emulator_sandbox();
    char buf[256];
    return ::getcwd(buf, sizeof buf) == nullptr && errno == EPERM ? 0 : 1;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Sandbox, NoCapabilitiesAndNoNewPrivs) {
  const int status = in_child([] {
    enter_emulator_sandbox();
    // Dropped CAP_CHOWN/CAP_DAC_OVERRIDE: root can no longer read a file it may not.
    FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return 10;
    char line[256];
    bool caps_zero = false, nnp = false;
    while (std::fgets(line, sizeof line, f)) {
      if (std::string(line).rfind("CapEff:\t0000000000000000", 0) == 0) caps_zero = true;
      if (std::string(line).rfind("NoNewPrivs:\t1", 0) == 0) nnp = true;
    }
    std::fclose(f);
    return caps_zero && nnp ? 0 : 11;
  });
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Sandbox, ConfinedToTheStateDir) {
  if (::geteuid() != 0) GTEST_SKIP() << "chroot needs root";
  const auto dir =
      std::filesystem::temp_directory_path() / ("vtpm-confine-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const int status = in_child([&] {
    StateStore store(dir.string(), TpmVersion::V2, /*create=*/false);
    confine_to_dir(store.dir_fd());
    enter_emulator_sandbox();
    if (::access("/etc/passwd", F_OK) == 0) return 30;  // the host is out of sight
    if (::access("/.lock", F_OK) != 0) return 31;       // its own state dir is "/"
    store.store("permall", std::vector<uint8_t>{0, 1, 2});
    return store.load("permall") ? 0 : 32;
  });
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Sandbox, TpmWorkloadRunsUnderTheFilter) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("vtpm-sandbox-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const int status = in_child([&] {
    StateStore store(dir.string(), TpmVersion::V2, /*create=*/true);
    TpmEngine engine(store);
    confine_to_dir(store.dir_fd());
    enter_emulator_sandbox();
    if (rc_of(engine.process(proto::startup_command(TpmVersion::V2, true))) != 0) return 20;
    const auto get_random = bytes({0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x7b, 0, 8});
    if (rc_of(engine.process(get_random)) != 0) return 21;
    auto digests = bytes({0, 0, 0, 1, 0x00, 0x0b});  // one SHA-256 digest
    digests.insert(digests.end(), 32, 0x01);
    if (rc_of(engine.process(command(0x182, {16}, digests))) != 0) return 22;  // PCR_Extend
    // NV_DefineSpace(owner, 0x01500020: 8 bytes, ownerread|ownerwrite), then NV_Write.
    const auto nv_public =
        bytes({0, 0, 0, 14, 0x01, 0x50, 0, 0x20, 0, 0x0b, 0, 2, 0, 2, 0, 0, 0, 8});
    if (rc_of(engine.process(command(0x12a, {0x40000001}, nv_public))) != 0) return 23;
    const auto nv_data = bytes({0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0});
    if (rc_of(engine.process(command(0x137, {0x40000001, 0x01500020}, nv_data))) != 0) return 24;
    // CreatePrimary(owner, ECC P-256 restricted decryption key): key generation under the filter.
    const auto ecc_template = bytes(
        {0,    4,    0,    0,    0,    0,  // sensitive: no auth, no data
         0,    0x1a, 0x00, 0x23, 0x00, 0x0b, 0x00, 0x03, 0x00, 0x72, 0,    0,
         0x00, 0x06, 0x00, 0x80, 0x00, 0x43, 0x00, 0x10, 0x00, 0x03, 0x00, 0x10,
         0,    0,    0,    0,    0,    0,    0,    0,    0,    0});  // outsideInfo, creationPCR
    if (rc_of(engine.process(command(0x131, {0x40000001}, ecc_template))) != 0) return 25;
    if (rc_of(engine.process(proto::shutdown_state_command(TpmVersion::V2))) != 0) return 26;
    return 0;
  });
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace vtpm
