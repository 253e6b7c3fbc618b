// The template process (emulator/template.h), for real on this host: run_template serving a
// scratch run root in a forked child, its protocol spoken by hand as a hook speaks it (the hook's
// side, fork_from_template, needs cgroup v2 and says no before it connects on a v1 host), and
// stale_mapping on forked children that map a copy of a real library. Then the fd-passing
// packets underneath (common/io_util.h). Every wait is bounded: a hung template fails the test.
#include "emulator/template.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <libtpms/tpm_library.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "common/io_util.h"
#include "common/process_util.h"
#include "error_matchers.h"
#include "kernel/device_cgroup.h"
#include "state/state_store.h"
#include "state/swtpm_blob.h"
#include "tpm/local_ca.h"
#include "tpm/provision.h"
#include "tpm/tpm_engine.h"
#include "tpm/tpm_proto.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using vtpm::testing::expect_error;

constexpr uid_t kNobody = 65534;

// A forked child of the test's running body (its return value is the exit code), killed and
// reaped at the latest when this goes.
class Child {
 public:
  explicit Child(const std::function<int()>& body) {
    pid_ = ::fork();
    if (pid_ < 0) throw sys_error("fork");
    if (pid_ == 0) {
      int code = 99;
      try {
        code = body();
      } catch (...) {
        code = 98;
      }
      ::_exit(code);
    }
    pidfd_ = open_pidfd(pid_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { kill(); }

  pid_t pid() const { return pid_ > 0 ? pid_ : reaped_pid_; }
  // Its wait status once it has exited within the timeout (then reaped); nullopt while it runs.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return status_;
    if (!wait_pidfd(pidfd_.get(), timeout)) return std::nullopt;
    int st = 0;
    (void)::waitpid(pid_, &st, 0);
    reaped_pid_ = std::exchange(pid_, 0);
    status_ = st;
    return st;
  }
  bool running() { return !wait(0ms).has_value(); }
  void kill() {
    if (pid_ <= 0) return;
    (void)::kill(pid_, SIGKILL);
    (void)wait(10s);
  }

 private:
  pid_t pid_ = 0;
  pid_t reaped_pid_ = 0;
  UniqueFd pidfd_;
  std::optional<int> status_;
};

std::string describe_status(const std::optional<int>& st) {
  if (!st) return "still running";
  if (WIFEXITED(*st)) return "exit " + std::to_string(WEXITSTATUS(*st));
  if (WIFSIGNALED(*st)) return "signal " + std::to_string(WTERMSIG(*st));
  return "status " + std::to_string(*st);
}

// True once pred() holds, checked every 10 ms for at most `timeout`.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

// One byte from fd within the timeout; nullopt at EOF, time-out or error.
std::optional<char> read_byte(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
  char c = 0;
  if (::read(fd, &c, 1) != 1) return std::nullopt;
  return c;
}

// True when the pipe's read end sees EOF within the timeout (every write end closed).
bool sees_eof(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  char c = 0;
  return ::read(fd, &c, 1) == 0;
}

// A SOCK_SEQPACKET connection to the socket at path, answers bounded by `answer_timeout`; an
// empty UniqueFd with errno set when it cannot connect.
UniqueFd connect_unix(const std::string& path, std::chrono::seconds answer_timeout = 5s) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return fd;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    const int e = errno;
    fd.reset();
    errno = e;
    return fd;
  }
  const timeval tv{answer_timeout.count(), 0};
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A field of /proc/PID/status ("PPid", "State"), its value trimmed; "" when absent.
std::string status_field(pid_t pid, const std::string& name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(name + ":")) {
      const auto v = line.find_first_not_of(" \t", name.size() + 1);
      return v == std::string::npos ? "" : line.substr(v);
    }
  return "";
}

std::string comm_of(pid_t pid) {
  std::string c = read_text("/proc/" + std::to_string(pid) + "/comm");
  if (!c.empty() && c.back() == '\n') c.pop_back();
  return c;
}

// A process's fds and what each names (/proc/PID/fd links).
std::map<int, std::string> fds_of(pid_t pid) {
  std::map<int, std::string> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::error_code lec;
    const auto target = fs::read_symlink(e.path(), lec);
    out[std::stoi(e.path().filename().string())] = lec ? "?" : target.string();
  }
  return out;
}

std::string describe(const std::map<int, std::string>& fds) {
  std::string s;
  for (const auto& [fd, target] : fds) s += std::to_string(fd) + " -> " + target + "\n";
  return s;
}

bool holds(const std::map<int, std::string>& fds, const std::string& target) {
  for (const auto& [fd, t] : fds)
    if (t == target) return true;
  return false;
}

std::string socket_link(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return "?";
  return "socket:[" + std::to_string(st.st_ino) + "]";
}

bool drop_to_nobody() {
  return ::setgroups(0, nullptr) == 0 && ::setgid(kNobody) == 0 && ::setuid(kNobody) == 0;
}

// ---- run_template and its protocol ----

// A template's child as the hook gets it: our end of its socket and its pidfd.
struct Forked {
  UniqueFd ours;
  UniqueFd pidfd;
  pid_t pid = 0;
  std::string theirs;  // the child's end, as /proc/PID/fd names it
};

class TemplateProcess : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = vtpm::testing::test_dir("template");
    fs::remove_all(base_);
    fs::create_directories(base_);
    root_ = (base_ / "run").string();
  }
  void TearDown() override {
    // (the template's children are the template's, or init's once it is gone: by their pidfds)
    for (const auto& fd : emulators_) (void)::pidfd_send_signal(fd.get(), SIGKILL, nullptr, 0);
    for (const auto& fd : emulators_) (void)wait_pidfd(fd.get(), 5s);
    templates_.clear();
    if (HasFailure()) std::cerr << "the templates' log:\n" << read_text(log_path()) << "\n";
    fs::remove_all(base_);
  }

  std::string sock() const { return template_socket_path(root_); }
  std::string log_path() const { return (base_ / "template.log").string(); }
  Child& tpl() { return *templates_.back(); }

  // run_template on this test's run root in a forked child: exit 0 when it returned true, 3 for
  // false, 2 for an Error (its text to msg_fd); SIGALRM ends it after 60 s at the latest.
  Child& start_template(std::chrono::seconds idle = 0s, bool quiet = false, int msg_fd = -1) {
    const std::string root = root_, log = log_path();
    templates_.push_back(std::make_unique<Child>([=] {
      ::alarm(60);
      std::ofstream out(log, std::ios::app);
      spdlog::set_default_logger(std::make_shared<spdlog::logger>(
          "template", std::make_shared<spdlog::sinks::ostream_sink_mt>(out, true)));
      spdlog::set_level(spdlog::level::debug);
      try {
        return run_template({root, idle, quiet}) ? 0 : 3;
      } catch (const Error& e) {
        if (msg_fd >= 0) (void)!::write(msg_fd, e.what(), std::strlen(e.what()));
        spdlog::error("run_template: {}", e.what());
        return 2;
      }
    }));
    return tpl();
  }

  // A connection to the template once it serves (after it has warmed a TPM: 30 s at most).
  UniqueFd connect_when_serving(std::chrono::seconds answer_timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      if (UniqueFd fd = connect_unix(sock(), answer_timeout)) return fd;
      if (!tpl().running()) {
        ADD_FAILURE() << "the template ended before it served: "
                      << describe_status(tpl().wait(0ms));
        return {};
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "the template did not serve " << sock() << " within 30 s";
        return {};
      }
      std::this_thread::sleep_for(10ms);
    }
  }

  // "fork" with one end of a fresh socketpair, as a hook sends it; the answer must be
  // "forked" and the child's pidfd. pid 0 (and a test failure) otherwise.
  Forked request_fork(int conn) {
    Forked f;
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      ADD_FAILURE() << "socketpair: " << std::strerror(errno);
      return f;
    }
    f.ours = UniqueFd(sv[0]);
    UniqueFd theirs(sv[1]);
    f.theirs = socket_link(theirs.get());
    try {
      const int fd = theirs.get();
      send_packet(conn, "fork", {&fd, 1});
      theirs.reset();
      FdPacket answer = receive_packet(conn, 64);
      EXPECT_EQ(answer.data, "forked");
      if (answer.fds.size() != 1) {
        ADD_FAILURE() << "the answer has " << answer.fds.size() << " fds, not a pidfd";
        return f;
      }
      f.pid = pidfd_pid(answer.fds[0].get());
      emulators_.emplace_back(::fcntl(answer.fds[0].get(), F_DUPFD_CLOEXEC, 0));
      f.pidfd = std::move(answer.fds[0]);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "the fork request failed: " << e.what();
    }
    return f;
  }

  // The template's exit status within the timeout (test failure when it does not exit).
  std::optional<int> template_exit(std::chrono::milliseconds timeout) {
    auto st = tpl().wait(timeout);
    EXPECT_TRUE(st.has_value()) << "the template did not exit within " << timeout.count() << " ms";
    return st;
  }

  fs::path base_;
  std::string root_;
  std::vector<std::unique_ptr<Child>> templates_;
  std::vector<UniqueFd> emulators_;  // pidfds of every child the templates forked for us
};

TEST_F(TemplateProcess, ForksAChildHoldingOnlyItsSocketThatEndsWithItsHook) {
  start_template();
  const UniqueFd conn = connect_when_serving();
  ASSERT_TRUE(conn);
  Forked f = request_fork(conn.get());
  ASSERT_GT(f.pid, 0);
  const pid_t t = tpl().pid();
  EXPECT_EQ(status_field(f.pid, "PPid"), std::to_string(t));
  // Named once it has dropped the template's fds (detach_from_hook names it last).
  ASSERT_TRUE(eventually([&] { return comm_of(f.pid) == "vtpm-emu"; }, 5s)) << comm_of(f.pid);

  // What the template holds and the child must not: the listening socket, the lock (flock is
  // per open file: a child's copy would keep the run root taken after the template is gone),
  // the signalfd, the connection of the request.
  const auto template_fds = fds_of(t);
  EXPECT_TRUE(holds(template_fds, root_ + "/template.lock")) << describe(template_fds);
  EXPECT_TRUE(holds(template_fds, "anon_inode:[signalfd]")) << describe(template_fds);
  const auto child_fds = fds_of(f.pid);
  std::multiset<std::string> targets;
  for (const auto& [fd, target] : child_fds) targets.insert(target);
  EXPECT_EQ(targets, (std::multiset<std::string>{"/dev/null", "/dev/null", "/dev/null", f.theirs}))
      << describe(child_fds);

  // Our end closed before any options: it exits having started nothing, and the template reaps
  // it (no zombie), and serves on.
  f.ours.reset();
  EXPECT_TRUE(wait_pidfd(f.pidfd.get(), 5s)) << "the child lives on without its hook";
  const std::string proc = "/proc/" + std::to_string(f.pid);
  EXPECT_TRUE(eventually([&] { return !fs::exists(proc); }, 5s))
      << "not reaped: " << status_field(f.pid, "State");
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(root_)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"template.lock", "template.sock"}));
  EXPECT_TRUE(tpl().running());
  const UniqueFd again = connect_unix(sock());
  ASSERT_TRUE(again);
  EXPECT_GT(request_fork(again.get()).pid, 0);
}

// The whole hand-over short of a device (no /dev/vtpmx here): spawn_emulator sends the child
// its options, key and fds; it opens the state, starts libtpms (again, after the template's
// warm-up, in the same memory) and answers "loaded"; only then does the hook need /dev/vtpmx.
TEST_F(TemplateProcess, ItsChildStartsATpmFromTheHooksOptions) {
  // (forked before our end of the child's socket exists: a copy of it would keep the child
  // from seeing EOF)
  Child container([] {
    ::pause();
    return 0;
  });
  start_template();
  const UniqueFd conn = connect_when_serving();
  ASSERT_TRUE(conn);
  Forked f = request_fork(conn.get());
  ASSERT_GT(f.pid, 0);

  const std::string state = (base_ / "state").string();
  fs::create_directories(state);
  UniqueFd dir_fd(::open(state.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir_fd);
  const UniqueFd container_pidfd = open_pidfd(container.pid());
  Pipe log = make_pipe(), handoff = make_pipe();
  ASSERT_EQ(::fcntl(log.write.get(), F_SETFL, O_NONBLOCK), 0);
  const StateKey key(std::vector<uint8_t>(32, 0x5a));
  EmulatorOptions o;
  o.state_path = state;
  o.container_id = "c1";
  o.log_level = "debug";
  o.log_pipe = log.write.get();
  o.handoff_pipe = handoff.write.get();
  o.key = key;
  o.vtpmx = (base_ / "no-vtpmx").string();
  ForkedChild child{EmulatorProcess(f.pid, std::move(f.pidfd)), std::move(f.ours)};
  const auto t0 = std::chrono::steady_clock::now();
  expect_error(
      [&] { spawn_emulator(o, std::move(dir_fd), container_pidfd.get(), std::move(child)); },
      {o.vtpmx + " is not available"});
  // spawn_emulator stops it on its way out. It waits for the server fd with its stop signals
  // blocked (its signalfd is not read yet): it ends when its socket to the hook closes.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s)
      << "the undo waited for SIGTERM's grace (10 s) and then SIGKILLed the emulator";
  log.write.reset();
  handoff.write.reset();
  ASSERT_TRUE(sees_eof(handoff.read.get(), 10s)) << "the child lives on";
  std::string lines;
  char buf[4096];
  for (ssize_t n; (n = ::read(log.read.get(), buf, sizeof buf)) > 0;)
    lines.append(buf, static_cast<size_t>(n));
  EXPECT_NE(lines.find("TPM started"), std::string::npos) << lines;
  // The TPM it manufactured is in the state dir, encrypted with the key it was sent.
  const StateStore store(state, TpmVersion::V2, /*create=*/false, 0ms, key);
  EXPECT_TRUE(store.load("permall").has_value());
}

// The RSA EK's modulus of the TPM in dir: a function of its endorsement seed alone.
std::vector<uint8_t> ek_modulus(const std::string& dir) {
  struct Got {};
  const StateStore store(dir, TpmVersion::V2, /*create=*/false);
  TpmEngine engine(store);
  std::vector<uint8_t> modulus;
  try {
    create_ek_certificates(
        engine,
        [&](const EkPublic& ek) -> std::vector<uint8_t> {
          if (ek.rsa) modulus = ek.modulus;
          throw Got{};  // (no certificate wanted)
        },
        store);
  } catch (const Got&) {
  }
  return modulus;
}

// Two children of one template, the same options: two different TPMs (a fork copies the
// template's random generators; each child must reseed before libtpms makes its seeds).
// Each is stopped once its TPM is on disk (no /dev/vtpmx to go on with).
TEST_F(TemplateProcess, ItsChildrenManufactureDifferentTpms) {
  start_template();
  ASSERT_TRUE(connect_when_serving());
  Child container([] {
    ::pause();
    return 0;
  });
  const UniqueFd container_pidfd = open_pidfd(container.pid());
  std::vector<std::vector<uint8_t>> ekeys;
  for (const char* name : {"a", "b"}) {
    const UniqueFd conn = connect_unix(sock());
    ASSERT_TRUE(conn);
    Forked f = request_fork(conn.get());
    ASSERT_GT(f.pid, 0);
    const std::string state = (base_ / name).string();
    fs::create_directories(state);
    UniqueFd dir_fd(::open(state.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    Pipe log = make_pipe(), handoff = make_pipe();
    ASSERT_EQ(::fcntl(log.write.get(), F_SETFL, O_NONBLOCK), 0);
    EmulatorOptions o;
    o.state_path = state;
    o.container_id = name;
    o.log_level = "off";
    o.log_pipe = log.write.get();
    o.handoff_pipe = handoff.write.get();
    o.vtpmx = (base_ / "no-vtpmx").string();
    const std::string permall = state + "/" + state_file_name(TpmVersion::V2, "permall");
    const int pidfd = emulators_.back().get();
    std::thread stopper([&] {  // once its TPM is written
      (void)eventually([&] { return fs::exists(permall); }, 10s);
      (void)::pidfd_send_signal(pidfd, SIGKILL, nullptr, 0);
    });
    ForkedChild child{EmulatorProcess(f.pid, std::move(f.pidfd)), std::move(f.ours)};
    try {
      spawn_emulator(o, std::move(dir_fd), container_pidfd.get(), std::move(child));
      ADD_FAILURE() << "an emulator without /dev/vtpmx";
    } catch (const Error&) {
    }
    stopper.join();
    ASSERT_TRUE(fs::exists(permall));
    fs::copy(state, state + "-copy");  // (the EK made persistent changes the state)
    ekeys.push_back(ek_modulus(state));
    ASSERT_FALSE(ekeys.back().empty());
  }
  EXPECT_NE(ekeys[0], ekeys[1]) << "two children of the template made TPMs of one seed";
  // (what makes that comparison mean something: one TPM, one EK)
  EXPECT_EQ(ek_modulus((base_ / "a-copy").string()), ekeys[0]);
}

TEST_F(TemplateProcess, ItsChildNeedsAKeeper) {
  start_template();
  const UniqueFd conn = connect_when_serving();
  ASSERT_TRUE(conn);
  Forked f = request_fork(conn.get());
  ASSERT_GT(f.pid, 0);
  const int pidfd = emulators_.back().get();
  EmulatorOptions o;  // no log pipe, no hand-off pipe
  o.state_path = (base_ / "state").string();
  ForkedChild child{EmulatorProcess(f.pid, std::move(f.pidfd)), std::move(f.ours)};
  expect_error([&] { spawn_emulator(o, UniqueFd(), -1, std::move(child)); }, {"needs a keeper"});
  EXPECT_TRUE(wait_pidfd(pidfd, 10s)) << "the child lives on";
}

// A keeper from the template (PendingKeeper): it sandboxes itself as the emulator user from its
// options alone, then gets the devices' fds and the cgroup's cgroup.events, holds
// those and nothing of the template's, relays its emulator's log, fails the commands of a
// device whose emulator died, and ends once the cgroup is empty.
TEST_F(TemplateProcess, ItsChildBecomesTheKeeperTheHookAsksFor) {
  start_template();
  const UniqueFd conn = connect_when_serving();
  ASSERT_TRUE(conn);
  Forked f = request_fork(conn.get());
  ASSERT_GT(f.pid, 0);
  const pid_t keeper = f.pid;
  const UniqueFd keeper_pidfd = open_pidfd(keeper);

  const std::string events = (base_ / "cgroup.events").string();
  std::ofstream(events) << "populated 1\nfrozen 0\n";
  const CgroupWatch cgroup = CgroupWatch::adopt_v2(
      UniqueFd(::open(events.c_str(), O_RDONLY | O_CLOEXEC)), (base_ / "c1").string());
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd kernel_side(sv[0]), server(sv[1]);
  Child emulator([] {
    ::pause();
    return 0;
  });
  const UniqueFd emulator_pidfd = open_pidfd(emulator.pid());
  Pipe log = make_pipe(), handoff = make_pipe();
  const std::string empty = (base_ / "empty").string();
  fs::create_directories(empty);
  const std::string log_file = (base_ / "keeper.log").string();
  std::vector<KeptDevice> devs = {{.server_fd = server.get(),
                                   .emulator_pidfd = emulator_pidfd.get(),
                                   .version = TpmVersion::V2,
                                   .log_fd = log.read.get(),
                                   .handoff_fd = handoff.read.get()}};
  ForkedChild child{EmulatorProcess(f.pid, std::move(f.pidfd)), std::move(f.ours)};
  PendingKeeper pending(std::move(child),
                        {"c1", "debug", log_file, empty, Credentials{kNobody, kNobody}});
  // It sandboxes itself before it gets any device.
  ASSERT_TRUE(eventually([&] { return status_field(keeper, "Uid").starts_with("65534"); }, 5s));
  pending.hand_over(devs, cgroup);

  EXPECT_EQ(status_field(keeper, "PPid"), std::to_string(tpl().pid()));
  ASSERT_TRUE(eventually([&] { return comm_of(keeper) == "vtpm-keep"; }, 5s)) << comm_of(keeper);
  EXPECT_EQ(status_field(keeper, "Uid").substr(0, 5), "65534");
  // What it may hold: stdio on /dev/null, what the hook passed, its log file and signalfd
  // (its socket to the hook it closes once it has answered).
  const std::set<std::string> allowed = {
      "/dev/null",
      socket_link(server.get()),
      "anon_inode:[pidfd]",
      events,
      log_file,
      "anon_inode:[signalfd]",
      f.theirs,
      fs::read_symlink("/proc/self/fd/" + std::to_string(log.read.get())),
      fs::read_symlink("/proc/self/fd/" + std::to_string(handoff.read.get()))};
  const auto keeper_fds = fds_of(keeper);
  for (const auto& [fd, target] : keeper_fds)
    EXPECT_TRUE(allowed.contains(target)) << fd << " -> " << target << "\n" << describe(keeper_fds);
  EXPECT_TRUE(holds(keeper_fds, socket_link(server.get()))) << describe(keeper_fds);
  EXPECT_TRUE(holds(keeper_fds, events)) << describe(keeper_fds);

  // The hook's copies go; the keeper's hold the device and the pipes.
  server.reset();
  log.read.reset();
  handoff.read.reset();
  const std::string line = "a line of the emulator's\n";
  ASSERT_EQ(::write(log.write.get(), line.data(), line.size()), static_cast<ssize_t>(line.size()));
  log.write.reset();
  emulator.kill();
  handoff.write.reset();
  const uint8_t eight[] = {0, 8};
  const auto cmd = proto::command(proto::kTpm2StNoSessions, TPM2_CC_GetRandom, eight);
  ASSERT_EQ(::write(kernel_side.get(), cmd.data(), cmd.size()), static_cast<ssize_t>(cmd.size()));
  pollfd p{kernel_side.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "the keeper did not answer for the dead emulator";
  uint8_t buf[64];
  const ssize_t n = ::read(kernel_side.get(), buf, sizeof buf);
  ASSERT_GE(n, 10);
  EXPECT_EQ(proto::response_code({buf, static_cast<size_t>(n)}), proto::kTpm2RcFailure);
  EXPECT_TRUE(eventually(
      [&] {
        std::ifstream in(log_file);
        const std::string text{std::istreambuf_iterator<char>(in), {}};
        return text.find("emulator 0: a line of the emulator's") != std::string::npos;
      },
      5s))
      << "the emulator's line was not relayed to " << log_file;

  std::ofstream(events) << "populated 0\nfrozen 0\n";
  ASSERT_EQ(::write(kernel_side.get(), cmd.data(), cmd.size()), static_cast<ssize_t>(cmd.size()));
  EXPECT_TRUE(wait_pidfd(keeper_pidfd.get(), 10s)) << "the keeper outlived the cgroup";
  EXPECT_TRUE(tpl().running());
}

// A setup that fails before its keeper has devices: the keeper exits at its socket's EOF (not
// after the stop's grace); one that cannot sandbox itself fails hand_over with its reason.
TEST_F(TemplateProcess, APendingKeeperEndsWithItsSetupAndTellsWhyItFailed) {
  start_template();
  const std::string empty = (base_ / "empty").string();
  fs::create_directories(empty);
  {
    const UniqueFd conn = connect_when_serving();
    ASSERT_TRUE(conn);
    Forked f = request_fork(conn.get());
    ASSERT_GT(f.pid, 0);
    const UniqueFd pidfd = open_pidfd(f.pid);
    const auto t0 = std::chrono::steady_clock::now();
    {
      PendingKeeper pending(
          ForkedChild{EmulatorProcess(f.pid, std::move(f.pidfd)), std::move(f.ours)},
          {"c1", "info", "", empty, Credentials{kNobody, kNobody}});
    }
    EXPECT_TRUE(wait_pidfd(pidfd.get(), 0ms)) << "the keeper outlived its PendingKeeper";
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  }
  const UniqueFd conn = connect_unix(sock());
  ASSERT_TRUE(conn);
  Forked f = request_fork(conn.get());
  ASSERT_GT(f.pid, 0);
  PendingKeeper pending(
      ForkedChild{EmulatorProcess(f.pid, std::move(f.pidfd)), std::move(f.ours)},
      {"c1", "info", "", (base_ / "no-such-dir").string(), Credentials{kNobody, kNobody}});
  const std::string events = (base_ / "cgroup.events").string();
  std::ofstream(events) << "populated 1\n";
  const CgroupWatch cgroup = CgroupWatch::adopt_v2(
      UniqueFd(::open(events.c_str(), O_RDONLY | O_CLOEXEC)), (base_ / "c1").string());
  expect_error([&] { pending.hand_over({}, cgroup); }, {"no-such-dir"});
  EXPECT_TRUE(tpl().running());
}

TEST_F(TemplateProcess, EachRequestGetsAChildOfItsOwn) {
  start_template();
  std::vector<Forked> kids;
  for (int i = 0; i < 3; ++i) {
    const UniqueFd conn = i == 0 ? connect_when_serving() : connect_unix(sock());
    ASSERT_TRUE(conn);
    kids.push_back(request_fork(conn.get()));
    ASSERT_GT(kids.back().pid, 0);
  }
  EXPECT_NE(kids[0].pid, kids[1].pid);
  EXPECT_NE(kids[1].pid, kids[2].pid);
  EXPECT_NE(kids[0].pid, kids[2].pid);
  for (auto& k : kids) {
    k.ours.reset();
    EXPECT_TRUE(wait_pidfd(k.pidfd.get(), 5s));
  }
}

TEST_F(TemplateProcess, AFreshTemplateAndItsChildAreNotStale) {
  start_template();
  const UniqueFd conn = connect_when_serving();
  ASSERT_TRUE(conn);
  EXPECT_EQ(stale_mapping(tpl().pid()), std::nullopt);
  const Forked f = request_fork(conn.get());
  ASSERT_GT(f.pid, 0);
  EXPECT_EQ(stale_mapping(f.pid), std::nullopt);
}

TEST_F(TemplateProcess, TheSocketIsRootsAlone) {
  start_template();
  ASSERT_TRUE(connect_when_serving());
  struct stat st {};
  ASSERT_EQ(::stat(sock().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0077, 0u) << std::oct << st.st_mode;  // (bound under umask 0077)
  EXPECT_EQ(st.st_uid, 0u);
  // Another user cannot even connect (the run root itself is open to all here: 0755).
  Child nobody([&] {
    if (!drop_to_nobody()) return 2;
    if (connect_unix(sock())) return 1;
    return errno == EACCES ? 0 : 100 + errno;
  });
  const auto status = nobody.wait(10s);
  EXPECT_EQ(describe_status(status), "exit 0") << "0: EACCES, 1: connected, 100+: errno";
  // ...and root is served as before.
  const UniqueFd conn = connect_unix(sock());
  ASSERT_TRUE(conn);
  EXPECT_GT(request_fork(conn.get()).pid, 0);
}

TEST_F(TemplateProcess, RefusesAnotherUserEvenWhereTheSocketLetsItConnect) {
  start_template();
  ASSERT_TRUE(connect_when_serving());
  ASSERT_EQ(::chmod(sock().c_str(), 0666), 0);  // what a mistaken administrator might do
  Child nobody([&] {
    if (!drop_to_nobody()) return 2;
    const UniqueFd conn = connect_unix(sock());
    if (!conn) return 3;
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return 4;
    const int fd = sv[1];
    try {
      send_packet(conn.get(), "fork", {&fd, 1});
    } catch (const Error&) {
      return 0;  // closed on us already
    }
    // EOF, or ECONNRESET: the template closed the connection with our request unread.
    char buf[64];
    const ssize_t r = ::recv(conn.get(), buf, sizeof buf, 0);  // 5 s at most
    if (r == 0 || (r < 0 && errno == ECONNRESET)) return 0;
    return r > 0 ? 1 : 5;
  });
  EXPECT_EQ(describe_status(nobody.wait(10s)), "exit 0")
      << "1: answered another user, 5: no answer (time-out), 2-4: the test's own setup";
  const UniqueFd conn = connect_unix(sock());
  ASSERT_TRUE(conn);
  EXPECT_GT(request_fork(conn.get()).pid, 0);
}

TEST_F(TemplateProcess, MalformedRequestsAreRefusedAndTheirFdsClosed) {
  start_template();
  ASSERT_TRUE(connect_when_serving());
  const std::pair<std::string, size_t> bad[] = {
      {"fork", 0}, {"fork", 2}, {"fork please", 1}, {"forked", 1}, {std::string(65, 'f'), 1}};
  for (const auto& [data, n] : bad) {
    SCOPED_TRACE("\"" + data.substr(0, 12) + "\" with " + std::to_string(n) + " fds");
    const UniqueFd conn = connect_unix(sock());
    ASSERT_TRUE(conn);
    auto [rd, wr] = make_pipe();
    const std::vector<int> fds(n, wr.get());
    send_packet(conn.get(), data, fds);
    wr.reset();
    const FdPacket answer = receive_packet(conn.get(), 64);
    EXPECT_EQ(answer.data, "");
    EXPECT_TRUE(answer.fds.empty());
    // The template kept no copy of what it was passed.
    EXPECT_TRUE(sees_eof(rd.get(), 5s));
  }
  EXPECT_TRUE(tpl().running());
  const UniqueFd conn = connect_unix(sock());
  ASSERT_TRUE(conn);
  EXPECT_GT(request_fork(conn.get()).pid, 0);
}

TEST_F(TemplateProcess, ASilentClientDoesNotHoldTheTemplate) {
  start_template();
  const UniqueFd silent = connect_when_serving();
  ASSERT_TRUE(silent);
  const auto t0 = std::chrono::steady_clock::now();
  const UniqueFd conn = connect_unix(sock(), 8s);
  ASSERT_TRUE(conn);
  EXPECT_GT(request_fork(conn.get()).pid, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
  // The silent one was dropped after its time-out.
  EXPECT_EQ(receive_packet(silent.get(), 64).data, "");
}

TEST_F(TemplateProcess, ASecondTemplateOfTheRunRootStepsAside) {
  start_template();
  ASSERT_TRUE(connect_when_serving());
  const pid_t first = tpl().pid();
  struct stat before {};
  ASSERT_EQ(::stat(sock().c_str(), &before), 0);

  // Started by a hook: no error, nothing served, at once.
  const auto t0 = std::chrono::steady_clock::now();
  Child& quiet = start_template(0s, /*quiet=*/true);
  EXPECT_EQ(describe_status(quiet.wait(10s)), "exit 3") << "3: returned false";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);

  // By hand (a supervisor's): an error naming the socket.
  auto [rd, wr] = make_pipe();
  Child& loud = start_template(0s, /*quiet=*/false, wr.get());
  EXPECT_EQ(describe_status(loud.wait(10s)), "exit 2") << "2: threw Error";
  wr.reset();
  const std::string msg = read_all(rd.get(), 4096, "the message");
  EXPECT_NE(msg.find("another template serves " + sock()), std::string::npos) << msg;

  // The first one's socket is untouched and it serves on.
  struct stat after {};
  ASSERT_EQ(::stat(sock().c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  templates_.pop_back();
  templates_.pop_back();
  ASSERT_EQ(tpl().pid(), first);
  EXPECT_TRUE(tpl().running());
  const UniqueFd conn = connect_unix(sock());
  ASSERT_TRUE(conn);
  EXPECT_GT(request_fork(conn.get()).pid, 0);
}

TEST_F(TemplateProcess, RetireEndsItAndRemovesItsSocket) {
  start_template();
  const UniqueFd conn = connect_when_serving();
  ASSERT_TRUE(conn);
  send_packet(conn.get(), "retire", {});
  EXPECT_EQ(describe_status(template_exit(5s)), "exit 0");
  EXPECT_FALSE(fs::exists(sock()));
}

TEST_F(TemplateProcess, ItsChildrenDoNotKeepTheRunRootTaken) {
  start_template();
  const UniqueFd conn = connect_when_serving();
  ASSERT_TRUE(conn);
  const Forked f = request_fork(conn.get());  // alive: we keep our end
  ASSERT_GT(f.pid, 0);
  ASSERT_TRUE(eventually([&] { return comm_of(f.pid) == "vtpm-emu"; }, 5s));
  const UniqueFd retire = connect_unix(sock());  // (one request a connection)
  ASSERT_TRUE(retire);
  send_packet(retire.get(), "retire", {});
  ASSERT_EQ(describe_status(template_exit(5s)), "exit 0");
  EXPECT_FALSE(wait_pidfd(f.pidfd.get(), 0ms)) << "the child was to live on";
  // A new template takes the run root over while the old one's child lives.
  start_template(0s, /*quiet=*/true);
  const UniqueFd next = connect_when_serving();
  ASSERT_TRUE(next);
  EXPECT_GT(request_fork(next.get()).pid, 0);
}

TEST_F(TemplateProcess, ADeadTemplatesSocketIsTakenOver) {
  start_template();
  ASSERT_TRUE(connect_when_serving());
  tpl().kill();  // SIGKILL: its socket stays behind, its lock goes with it
  ASSERT_TRUE(fs::exists(sock()));
  const UniqueFd dead = connect_unix(sock());
  const int err = errno;
  EXPECT_FALSE(dead);
  EXPECT_EQ(err, ECONNREFUSED) << std::strerror(err);
  start_template(0s, /*quiet=*/true);
  const UniqueFd conn = connect_when_serving();
  ASSERT_TRUE(conn);
  EXPECT_GT(request_fork(conn.get()).pid, 0);
}

TEST_F(TemplateProcess, IdleExitWithNoChild) {
  const auto t0 = std::chrono::steady_clock::now();
  start_template(1s);
  EXPECT_EQ(describe_status(template_exit(30s)), "exit 0");
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_FALSE(fs::exists(sock()));
}

TEST_F(TemplateProcess, IdleExitWaitsForItsChildren) {
  start_template(1s);
  Forked f;
  {
    const UniqueFd conn = connect_when_serving();
    ASSERT_TRUE(conn);
    f = request_fork(conn.get());
    ASSERT_GT(f.pid, 0);
  }
  EXPECT_FALSE(tpl().wait(1500ms).has_value()) << "it left while a child of its lived";
  f.ours.reset();  // the child ends, the template reaps it, and is idle from then on
  EXPECT_EQ(describe_status(template_exit(5s)), "exit 0");
  EXPECT_FALSE(fs::exists(sock()));
}

TEST_F(TemplateProcess, SigtermEndsItAndRemovesItsSocket) {
  start_template();
  ASSERT_TRUE(connect_when_serving());
  ASSERT_EQ(::kill(tpl().pid(), SIGTERM), 0);
  EXPECT_EQ(describe_status(template_exit(5s)), "exit 0");
  EXPECT_FALSE(fs::exists(sock()));
}

TEST_F(TemplateProcess, SigintEndsItAndRemovesItsSocket) {
  start_template();
  ASSERT_TRUE(connect_when_serving());
  ASSERT_EQ(::kill(tpl().pid(), SIGINT), 0);
  EXPECT_EQ(describe_status(template_exit(5s)), "exit 0");
  EXPECT_FALSE(fs::exists(sock()));
}

TEST(TemplateUse, NoTemplateWithoutCgroupV2) {
  // (with cgroup v2 it would start a template from /proc/self/exe: this binary, not vtpm-hook)
  if (own_cgroup_v2()) GTEST_SKIP() << "cgroup v2: the hook's side is the e2e tests'";
  const auto base = vtpm::testing::test_dir("template-use");
  TemplateUse use;
  use.run_root = base.string();
  use.log_level = "off";
  EXPECT_FALSE(fork_from_template(use).has_value());
  EXPECT_FALSE(fs::exists(base)) << "it started something";
  fs::remove_all(base);
}

// ---- the hook's cgroup (fork_from_template moves the child there), on a stand-in tree ----

class TemplateCgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = vtpm::testing::test_dir("template-cgroup");
    fs::remove_all(base_);
    paths_.proc = (base_ / "proc").string();
    paths_.cgroup_root = (base_ / "cgroup").string();
    fs::create_directories(paths_.cgroup_root + "/hook/sub");
    std::ofstream(paths_.cgroup_root + "/hook/sub/cgroup.procs");
  }
  void TearDown() override { fs::remove_all(base_); }
  void set_cgroup(pid_t pid, const std::string& text) {
    fs::create_directories(paths_.proc + "/" + std::to_string(pid));
    std::ofstream(paths_.proc + "/" + std::to_string(pid) + "/cgroup") << text;
  }
  fs::path base_;
  CgroupPaths paths_;
};

TEST_F(TemplateCgroup, OwnCgroupIsV2Only) {
  set_cgroup(::getpid(), "0::/hook/sub\n");
  EXPECT_EQ(own_cgroup_v2(paths_), "/hook/sub");
  // v1, or hybrid (devices on v1): no template
  set_cgroup(::getpid(), "5:devices:/hook\n4:memory:/x\n");
  EXPECT_EQ(own_cgroup_v2(paths_), std::nullopt);
  set_cgroup(::getpid(), "5:devices:/hook\n0::/hook\n");
  EXPECT_EQ(own_cgroup_v2(paths_), std::nullopt);
  set_cgroup(::getpid(), "0::/hook/../other\n");
  expect_error([&] { own_cgroup_v2(paths_); }, {"odd cgroup path"});
  // This host, for real.
  if (!fs::exists("/sys/fs/cgroup/cgroup.controllers")) {
    EXPECT_EQ(own_cgroup_v2(), std::nullopt);
  }
}

TEST_F(TemplateCgroup, TheChildsCgroupIsCheckedAndItsDirectoryOpened) {
  constexpr pid_t kChild = 4000001;
  set_cgroup(kChild, "0::/hook/sub\n");
  check_in_cgroup(kChild, "/hook/sub", paths_);
  set_cgroup(kChild, "0::/template\n");  // born elsewhere
  expect_error([&] { check_in_cgroup(kChild, "/hook/sub", paths_); },
               {"4000001", "is not in the cgroup /hook/sub"});
  set_cgroup(kChild, "5:devices:/hook/sub\n0::/hook/sub\n");  // a v1 devices hierarchy: not v2
  expect_error([&] { check_in_cgroup(kChild, "/hook/sub", paths_); }, {"is not in the cgroup"});
  EXPECT_TRUE(open_cgroup_dir("/hook/sub", paths_));
  expect_error([&] { open_cgroup_dir("/gone", paths_); }, {"open", "/gone"});
}

// ---- stale_mapping ----

// The file of a real library this binary maps (libtpms, as a template does).
std::string real_library() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&::TPMLIB_GetVersion), &info) == 0 || !info.dli_fname)
    return "";
  return fs::canonical(info.dli_fname).string();
}

// A child that maps `path` as the loader maps a library (dlopen), then waits to be killed.
class Mapper {
 public:
  explicit Mapper(const std::string& path) {
    auto [rd, wr] = make_pipe();
    const int w = wr.get();
    child_ = std::make_unique<Child>([path, w] {
      const char ok = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL) ? 'y' : 'n';
      if (::write(w, &ok, 1) != 1) return 1;
      ::pause();
      return 0;
    });
    wr.reset();
    ready_ = read_byte(rd.get(), 5s) == 'y';
  }
  bool ready() const { return ready_; }
  pid_t pid() const { return child_->pid(); }

 private:
  std::unique_ptr<Child> child_;
  bool ready_ = false;
};

class TemplateStaleMapping : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = vtpm::testing::test_dir("stale");
    fs::remove_all(base_);
    fs::create_directories(base_);
    real_ = real_library();
    ASSERT_FALSE(real_.empty()) << "libtpms is not mapped from a file";
    // (spaces: the path is the rest of a maps line)
    lib_ = (base_ / "lib copy (2).so.0").string();
    fs::copy_file(real_, lib_);
  }
  void TearDown() override { fs::remove_all(base_); }

  // A new file at lib_, renamed over it (as dpkg and a build do).
  void replace_copy() {
    const std::string tmp = lib_ + ".new";
    fs::copy_file(real_, tmp);
    ASSERT_EQ(::rename(tmp.c_str(), lib_.c_str()), 0);
  }

  bool maps_copy(pid_t pid) const {
    return read_text("/proc/" + std::to_string(pid) + "/maps").find(lib_) != std::string::npos;
  }

  fs::path base_;
  std::string real_, lib_;
};

TEST_F(TemplateStaleMapping, NothingReplacedIsNotStale) {
  EXPECT_EQ(stale_mapping(::getpid()), std::nullopt);
  Child plain([] {
    ::pause();
    return 0;
  });
  EXPECT_EQ(stale_mapping(plain.pid()), std::nullopt);
  const Mapper m(lib_);
  ASSERT_TRUE(m.ready());
  ASSERT_TRUE(maps_copy(m.pid()));
  EXPECT_EQ(stale_mapping(m.pid()), std::nullopt);
}

TEST_F(TemplateStaleMapping, ACopyReplacedOnDiskIsNamed) {
  const Mapper m(lib_);
  ASSERT_TRUE(m.ready());
  replace_copy();
  const auto why = stale_mapping(m.pid());
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(*why, lib_ + " was replaced");
}

TEST_F(TemplateStaleMapping, ADeletedCopyIsNamed) {
  const Mapper m(lib_);
  ASSERT_TRUE(m.ready());
  ASSERT_EQ(::unlink(lib_.c_str()), 0);
  const auto why = stale_mapping(m.pid());
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find(lib_), std::string::npos) << *why;
}

TEST_F(TemplateStaleMapping, ACopyChangedInPlaceIsNamed) {
  const Mapper m(lib_);
  ASSERT_TRUE(m.ready());
  // The check allows a second of slack past the start (known to the second), and file times
  // come from a coarse clock, a tick behind: a change 50 ms into the second after next is past
  // both (at most 2.05 s from now).
  const auto ready = std::chrono::system_clock::now();
  std::this_thread::sleep_until(std::chrono::floor<std::chrono::seconds>(ready) + 2s + 50ms);
  EXPECT_EQ(stale_mapping(m.pid()), std::nullopt);  // nothing changed yet
  ASSERT_EQ(::chmod(lib_.c_str(), 0600), 0);        // the same file, its ctime now
  const auto why = stale_mapping(m.pid());
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(*why, lib_ + " was changed after the template started");
}

// In a mount namespace of the checker's own, the path the child's maps names is another file
// (a bind mount over it) or none (a tmpfs over its directory): the checker sees what a hook in
// that namespace would.
class TemplateStaleMappingNs : public TemplateStaleMapping {
 protected:
  // body's result (0: as expected) from a child of the test's in a private mount namespace;
  // skips where this host cannot give one.
  void in_private_mounts(const std::function<int()>& body) {
    Child c([&] {
      if (::unshare(CLONE_NEWNS) != 0) return 77;
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 77;
      return body();
    });
    const auto st = c.wait(10s);
    ASSERT_TRUE(st.has_value());
    if (WIFEXITED(*st) && WEXITSTATUS(*st) == 77) GTEST_SKIP() << "no mount namespace here";
    EXPECT_EQ(describe_status(st), "exit 0");
  }
};

TEST_F(TemplateStaleMappingNs, AnotherFileAtThePathIsNamed) {
  const Mapper m(lib_);
  ASSERT_TRUE(m.ready());
  const std::string other = (base_ / "other").string();
  std::ofstream(other) << "not the library";
  const pid_t pid = m.pid();
  in_private_mounts([&] {
    if (::mount(other.c_str(), lib_.c_str(), nullptr, MS_BIND, nullptr) != 0) return 2;
    const auto why = stale_mapping(pid);
    if (!why) return 3;
    return *why == lib_ + " was replaced" ? 0 : 4;
  });
}

TEST_F(TemplateStaleMappingNs, NoFileAtThePathIsNamed) {
  const Mapper m(lib_);
  ASSERT_TRUE(m.ready());
  const pid_t pid = m.pid();
  in_private_mounts([&] {
    if (::mount("tmpfs", base_.c_str(), "tmpfs", 0, nullptr) != 0) return 2;
    const auto why = stale_mapping(pid);
    if (!why) return 3;
    return *why == lib_ + " is gone" ? 0 : 4;
  });
}

// Mappings that name no file on disk: a shared anonymous mapping shows as "/dev/zero
// (deleted)", a memfd as "/memfd:NAME (deleted)". No library was replaced.
TEST_F(TemplateStaleMapping, MappingsOfNoFileOnDiskAreNotStale) {
  auto [rd, wr] = make_pipe();
  const int w = wr.get();
  Child c([w] {
    void* shared = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    const int mfd = ::memfd_create("vtpm-test", MFD_CLOEXEC);
    const bool ok = shared != MAP_FAILED && mfd >= 0 && ::ftruncate(mfd, 4096) == 0 &&
                    ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, mfd, 0) != MAP_FAILED;
    const char r = ok ? 'y' : 'n';
    if (::write(w, &r, 1) != 1) return 1;
    ::pause();
    return 0;
  });
  wr.reset();
  ASSERT_EQ(read_byte(rd.get(), 5s), 'y');
  const std::string maps = read_text("/proc/" + std::to_string(c.pid()) + "/maps");
  ASSERT_NE(maps.find("/dev/zero (deleted)"), std::string::npos) << maps;
  ASSERT_NE(maps.find("/memfd:vtpm-test (deleted)"), std::string::npos) << maps;
  EXPECT_EQ(stale_mapping(c.pid()), std::nullopt);
}

TEST_F(TemplateStaleMapping, AnExitedProcessIsAnError) {
  Child gone([] { return 0; });
  ASSERT_TRUE(gone.wait(5s).has_value());
  expect_error([&] { stale_mapping(gone.pid()); }, {"exited"});
}

// ---- send_packet / receive_packet ----

struct PacketPair {
  UniqueFd a, b;
  PacketPair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
      throw sys_error("socketpair");
    a = UniqueFd(sv[0]);
    b = UniqueFd(sv[1]);
    const timeval tv{5, 0};  // no test waits longer for a message
    (void)::setsockopt(b.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
};

bool same_file(int x, int y) {
  struct stat sx {
  }, sy{};
  return ::fstat(x, &sx) == 0 && ::fstat(y, &sy) == 0 && sx.st_dev == sy.st_dev &&
         sx.st_ino == sy.st_ino;
}

size_t open_fd_count() { return fds_of(::getpid()).size(); }

// send_fd/receive_fd (the proxy's server fd, hook to emulator) are one-fd packets: exactly one
// fd, the same file, close-on-exec; a packet without one is an error.
TEST(FdPacket, OneFdAloneRoundTripsAndNothingElseIsTaken) {
  PacketPair s;
  Pipe pipe = make_pipe();
  send_fd(s.a.get(), pipe.write.get());
  const UniqueFd got = receive_fd(s.b.get());
  ASSERT_TRUE(got);
  struct stat a {
  }, b{};
  ASSERT_EQ(::fstat(got.get(), &a), 0);
  ASSERT_EQ(::fstat(pipe.write.get(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(::fcntl(got.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  send_packet(s.a.get(), "F", {});
  expect_error([&] { receive_fd(s.b.get()); }, {"no file descriptor came"});
  const int two[] = {pipe.read.get(), pipe.write.get()};
  send_packet(s.a.get(), "F", two);
  expect_error([&] { receive_fd(s.b.get()); }, {"no file descriptor came"});
}

TEST(FdPacket, DataAndEightFdsRoundTripCloseOnExec) {
  PacketPair s;
  std::vector<Pipe> pipes(kMaxPassedFds);
  std::vector<int> fds;
  for (auto& p : pipes) {
    p = make_pipe();
    fds.push_back(p.write.get());
  }
  const std::string data("payload\0with a NUL", 18);
  send_packet(s.a.get(), data, fds);
  const FdPacket p = receive_packet(s.b.get(), 64);
  EXPECT_EQ(p.data, data);
  ASSERT_EQ(p.fds.size(), kMaxPassedFds);
  for (size_t i = 0; i < kMaxPassedFds; ++i) {
    EXPECT_TRUE(same_file(p.fds[i].get(), fds[i])) << i;  // in order
    EXPECT_NE(p.fds[i].get(), fds[i]);
    const int flags = ::fcntl(p.fds[i].get(), F_GETFD);
    EXPECT_TRUE(flags >= 0 && (flags & FD_CLOEXEC)) << i;
  }
  // Data alone, and exactly max_size bytes.
  send_packet(s.a.get(), std::string(64, 'x'), {});
  const FdPacket q = receive_packet(s.b.get(), 64);
  EXPECT_EQ(q.data, std::string(64, 'x'));
  EXPECT_TRUE(q.fds.empty());
}

TEST(FdPacket, SendRefusesMoreThanEightFdsAndNoData) {
  PacketPair s;
  auto [rd, wr] = make_pipe();
  const std::vector<int> nine(kMaxPassedFds + 1, wr.get());
  expect_error([&] { send_packet(s.a.get(), "x", nine); }, {"wrong shape"});
  const int one = wr.get();
  expect_error([&] { send_packet(s.a.get(), "", {&one, 1}); }, {"wrong shape"});
  // Nothing went out.
  pollfd p{s.b.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);
}

// A peer that is not send_packet: nine fds in one message.
void send_raw(int sock, const std::string& data, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  std::vector<char> ctl(CMSG_SPACE(sizeof(int) * fds.size()));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl.data();
  msg.msg_controllen = ctl.size();
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  ASSERT_EQ(::sendmsg(sock, &msg, 0), static_cast<ssize_t>(data.size()));
}

TEST(FdPacket, TooManyFdsFromAPeerAreAnErrorAndNoneStays) {
  PacketPair s;
  auto [rd, wr] = make_pipe();
  send_raw(s.a.get(), "x", std::vector<int>(kMaxPassedFds + 1, wr.get()));
  wr.reset();
  const size_t before = open_fd_count();
  expect_error([&] { receive_packet(s.b.get(), 64); }, {"too long"});
  EXPECT_EQ(open_fd_count(), before);
  EXPECT_TRUE(sees_eof(rd.get(), 1s)) << "a copy of the pipe's write end stayed open";
}

// More than max_size bytes is an error, from the first byte too many on.
TEST(FdPacket, TooMuchDataIsAnErrorAndItsFdsAreClosed) {
  for (const size_t size : {200, 66, 65}) {
    SCOPED_TRACE(std::to_string(size) + " bytes for at most 64");
    PacketPair s;
    auto [rd, wr] = make_pipe();
    const int fd = wr.get();
    send_packet(s.a.get(), std::string(size, 'x'), {&fd, 1});
    wr.reset();
    const size_t before = open_fd_count();
    expect_error([&] { receive_packet(s.b.get(), 64); }, {"too long"});
    EXPECT_EQ(open_fd_count(), before);
    EXPECT_TRUE(sees_eof(rd.get(), 1s));
  }
}

TEST(FdPacket, EofIsAnEmptyPacketAndSilenceAnError) {
  {
    PacketPair s;
    const timeval tv{0, 100000};
    ASSERT_EQ(::setsockopt(s.b.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    expect_error([&] { receive_packet(s.b.get(), 64); }, {"receive a message"});
  }
  PacketPair s;
  s.a.reset();
  const FdPacket p = receive_packet(s.b.get(), 64);
  EXPECT_EQ(p.data, "");
  EXPECT_TRUE(p.fds.empty());
}

}  // namespace
}  // namespace vtpm
