// The kernel layer's pure parts: the device-program prefix (run by a small interpreter of the
// instructions it emits, in front of a deny-all program) and sysfs parsing (a stand-in tree).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "kernel/device_cgroup.h"
#include "kernel/vtpm_proxy.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;

// Runs a BPF_PROG_TYPE_CGROUP_DEVICE program over one access; knows exactly the instruction
// forms prepend_device_allow emits and a deny-all original. Returns r0 (1 = allow).
int run(const std::vector<bpf_insn>& prog, const bpf_cgroup_dev_ctx& ctx) {
  uint64_t r[11] = {};
  for (size_t pc = 0; pc < prog.size(); ++pc) {
    const bpf_insn& i = prog[pc];
    if (i.code == (BPF_LDX | BPF_W | BPF_MEM)) {
      EXPECT_EQ(i.src_reg, 1);  // ctx
      uint32_t v = 0;
      std::memcpy(&v, reinterpret_cast<const char*>(&ctx) + i.off, sizeof v);
      r[i.dst_reg] = v;
    } else if (i.code == (BPF_ALU | BPF_AND | BPF_K)) {
      r[i.dst_reg] = static_cast<uint32_t>(r[i.dst_reg] & static_cast<uint32_t>(i.imm));
    } else if (i.code == (BPF_JMP | BPF_JNE | BPF_K)) {
      if (r[i.dst_reg] != static_cast<uint64_t>(static_cast<uint32_t>(i.imm))) pc += i.off;
    } else if (i.code == (BPF_ALU64 | BPF_MOV | BPF_K)) {
      r[i.dst_reg] = static_cast<uint64_t>(i.imm);
    } else if (i.code == (BPF_JMP | BPF_EXIT)) {
      return static_cast<int>(r[0]);
    } else {
      ADD_FAILURE() << "unexpected instruction code 0x" << std::hex << int(i.code);
      return -1;
    }
  }
  ADD_FAILURE() << "fell off the end";
  return -1;
}

bpf_insn insn(uint8_t code, uint8_t dst, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.imm = imm;
  return i;
}

bpf_cgroup_dev_ctx access(uint32_t type, uint32_t major, uint32_t minor) {
  bpf_cgroup_dev_ctx c{};
  c.access_type = type | (BPF_DEVCG_ACC_READ << 16);
  c.major = major;
  c.minor = minor;
  return c;
}

TEST(DeviceProgram, AllowsExactlyTheGrantedCharDevicesThenRunsTheOriginal) {
  const std::vector<bpf_insn> deny_all = {insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0),
                                          insn(BPF_JMP | BPF_EXIT, 0, 0)};
  const DevNum granted[] = {{10, 224}, {253, 65536 + 3}};
  const auto prog = prepend_device_allow(deny_all, granted);
  EXPECT_EQ(run(prog, access(BPF_DEVCG_DEV_CHAR, 10, 224)), 1);
  EXPECT_EQ(run(prog, access(BPF_DEVCG_DEV_CHAR, 253, 65539)), 1);
  EXPECT_EQ(run(prog, access(BPF_DEVCG_DEV_CHAR, 253, 3)), 0);    // another minor
  EXPECT_EQ(run(prog, access(BPF_DEVCG_DEV_CHAR, 10, 124)), 0);   // /dev/vtpmx
  EXPECT_EQ(run(prog, access(BPF_DEVCG_DEV_BLOCK, 10, 224)), 0);  // a block device
  EXPECT_EQ(run(prog, access(BPF_DEVCG_DEV_CHAR, 224, 10)), 0);   // swapped numbers
  // the original program's own decisions stand for everything else
  const std::vector<bpf_insn> allow_all = {insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 1),
                                           insn(BPF_JMP | BPF_EXIT, 0, 0)};
  EXPECT_EQ(run(prepend_device_allow(allow_all, granted), access(BPF_DEVCG_DEV_BLOCK, 8, 0)), 1);
  // no grant: the original alone
  EXPECT_EQ(run(prepend_device_allow(deny_all, {}), access(BPF_DEVCG_DEV_CHAR, 10, 224)), 0);
}

class Sysfs : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("vtpm-sysfs-" + std::to_string(::getpid()));
    fs::create_directories(root_ / "tpm/tpm3");
    fs::create_directories(root_ / "tpmrm/tpmrm3");
  }
  void TearDown() override { fs::remove_all(root_); }
  void put(const std::string& rel, const std::string& text) { std::ofstream(root_ / rel) << text; }
  fs::path root_;
};

TEST_F(Sysfs, ReadsBothNodesOfATpm2) {
  put("tpm/tpm3/dev", "253:3\n");
  EXPECT_FALSE(read_host_devices(3, TpmVersion::V2, root_)) << "tpmrm not registered yet";
  put("tpmrm/tpmrm3/dev", "253:65539\n");
  const auto d = read_host_devices(3, TpmVersion::V2, root_);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->tpm_num, 3u);
  EXPECT_EQ(d->tpm.major, 253u);
  EXPECT_EQ(d->tpm.minor, 3u);
  ASSERT_TRUE(d->tpmrm);
  EXPECT_EQ(d->tpmrm->minor, 65539u);
}

TEST_F(Sysfs, Tpm12HasNoResourceManagerAndGarbageIsNotRegistered) {
  put("tpm/tpm3/dev", "10:224\n");
  const auto d = read_host_devices(3, TpmVersion::V1_2, root_);
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->tpmrm);
  put("tpm/tpm3/dev", "10-224\n");
  EXPECT_FALSE(read_host_devices(3, TpmVersion::V1_2, root_));
  EXPECT_FALSE(read_host_devices(4, TpmVersion::V1_2, root_));
}

// Debian's tpm-udev rules give /dev/tpm* to tss 0660: a vTPM's host nodes go back to
// root:root 0600. A node that is not the device (another number, a link) is left alone.
TEST_F(Sysfs, HostNodesBecomeRootsAlone) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mknod and chown";
  const fs::path dev = root_ / "dev";
  fs::create_directories(dev);
  const auto node = [&](const std::string& name, unsigned maj, unsigned min) {
    ASSERT_EQ(::mknod((dev / name).c_str(), S_IFCHR | 0660, ::makedev(maj, min)), 0);
    ASSERT_EQ(::chown((dev / name).c_str(), 4242, 4243), 0);
    ASSERT_EQ(::chmod((dev / name).c_str(), 0660), 0);
  };
  node("tpm3", 253, 3);
  node("tpmrm3", 253, 65539);
  node("other", 253, 4);
  fs::create_symlink(dev / "other", dev / "tpm4");
  restrict_host_nodes({3, {253, 3}, DevNum{253, 65539}}, dev);
  for (const char* name : {"tpm3", "tpmrm3"}) {
    struct stat st {};
    ASSERT_EQ(::stat((dev / name).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u) << name;
    EXPECT_EQ(st.st_gid, 0u) << name;
    EXPECT_EQ(st.st_mode & 07777, 0600u) << name;
  }
  restrict_host_nodes({4, {253, 4}, std::nullopt}, dev);  // tpm4 is a link: not followed
  restrict_host_nodes({3, {253, 9}, std::nullopt}, dev);  // tpm3 is not 253:9
  struct stat st {};
  ASSERT_EQ(::stat((dev / "other").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 4242u);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
}

}  // namespace
}  // namespace vtpm
