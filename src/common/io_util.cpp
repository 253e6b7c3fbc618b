#include "common/io_util.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "common/error.h"

namespace vtpm {

Pipe make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw sys_error("pipe");
  return {UniqueFd(p[0]), UniqueFd(p[1])};
}

std::string read_all(int fd, size_t max_size, const std::string& what) {
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw sys_error("read " + what);
    if (r == 0) return out;
    out.append(buf, static_cast<size_t>(r));
    if (out.size() > max_size)
      throw Error(what + " is larger than " +
                  (max_size % (1u << 20) == 0 ? std::to_string(max_size >> 20) + " MiB"
                                              : std::to_string(max_size) + " bytes"));
  }
}

std::string read_file(const std::string& path, size_t max_size) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw sys_error("read " + path);
  return read_all(fd.get(), max_size, path);
}

namespace {
constexpr char kHex[] = "0123456789abcdef";
}

std::string to_hex(std::span<const uint8_t> bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const uint8_t b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    const size_t end = s.find(sep, start);
    parts.push_back(s.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

std::optional<std::vector<uint8_t>> from_hex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (hex.size() % 2) return std::nullopt;
  std::vector<uint8_t> out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return out;
}

std::string one_line(std::string_view msg) {
  std::string out;
  for (const char c : msg) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7f) {
      out += c;
    } else {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  return out;
}

void write_all(int fd, std::span<const uint8_t> data, const std::string& what) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t w = ::write(fd, data.data() + off, data.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw sys_error("write " + what);
    if (w == 0) throw Error("write " + what + ": no progress");
    off += static_cast<size_t>(w);
  }
}

UniqueFd open_resolved(int dir_fd, const std::string& path, uint64_t flags, uint64_t resolve) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = resolve;
  for (;;) {
    const long fd = ::syscall(SYS_openat2, dir_fd, path.c_str(), &how, sizeof how);
    if (fd >= 0 || errno != EAGAIN) return UniqueFd(static_cast<int>(fd));
  }
}

void write_file_atomic(int dir_fd, const std::string& name, std::span<const uint8_t> data,
                       const std::string& what) {
  const std::string tmp = name + ".tmp";
  try {
    UniqueFd fd(
        ::openat(dir_fd, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) throw sys_error("create " + what + ".tmp");
    write_all(fd.get(), data, what + ".tmp");
    if (::fsync(fd.get()) != 0) throw sys_error("fsync " + what + ".tmp");
    fd.reset();
    if (::renameat(dir_fd, tmp.c_str(), dir_fd, name.c_str()) != 0)
      throw sys_error("rename " + what + ".tmp");
  } catch (const Error&) {
    (void)::unlinkat(dir_fd, tmp.c_str(), 0);  // the old file stays whole; the error says why
    throw;
  }
  if (::fsync(dir_fd) != 0) throw sys_error("fsync the directory of " + what);
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> data) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd) throw sys_error("open " + dir);
  write_file_atomic(dir_fd.get(), path.substr(slash + 1), data, path);
}

void send_packet(int sock, std::string_view data, std::span<const int> fds) {
  if (fds.size() > kMaxPassedFds || data.empty()) throw Error("a packet of the wrong shape");
  iovec iov{const_cast<char*>(data.data()), data.size()};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kMaxPassedFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = ctl;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  while (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
    if (errno != EINTR) throw sys_error("send a message");
}

FdPacket receive_packet(int sock, size_t max_size) {
  FdPacket p;
  p.data.resize(max_size + 1);
  iovec iov{p.data.data(), p.data.size()};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kMaxPassedFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl;
  msg.msg_controllen = sizeof ctl;
  ssize_t r;
  while ((r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0)
    if (errno != EINTR) throw sys_error("receive a message");
  // Every fd that came is ours to close, whatever else is wrong with the message.
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      p.fds.emplace_back(fd);
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || static_cast<size_t>(r) > max_size)
    throw Error("a message was too long");
  p.data.resize(static_cast<size_t>(r));
  return p;
}

void send_fd(int sock, int fd) { send_packet(sock, "F", {&fd, 1}); }

UniqueFd receive_fd(int sock) {
  FdPacket p = receive_packet(sock, 1);
  if (p.data.empty() || p.fds.size() != 1) throw Error("no file descriptor came");
  return std::move(p.fds[0]);
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {
  }, sb{};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

UniqueFd open_regular_file(int dir_fd, const std::string& path, const std::string& what,
                           struct stat& st) {
  UniqueFd fd(
      ::openat(dir_fd, path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY));
  if (!fd) return fd;
  if (::fstat(fd.get(), &st) != 0) throw sys_error("stat " + what);
  if (!S_ISREG(st.st_mode)) throw Error(what + " is not a regular file");
  return fd;
}

}  // namespace vtpm
