#pragma once
// Whole reads and writes on file descriptors, retried on EINTR and short transfers.
#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"

namespace vtpm {

// Everything up to EOF; more than max_size bytes is an Error naming `what`.
std::string read_all(int fd, size_t max_size, const std::string& what);

// A whole small file (/proc, sysfs, records), without iostreams (whose code a hook would run
// only for this, and under emulation every distinct piece of code a process runs costs).
// SysError "read <path>" with errno when it cannot be opened or read.
std::string read_file(const std::string& path, size_t max_size = 1u << 20);

// The parts of s between the separators (empty ones included). (std::views::split does not
// compile with clang 14 over libstdc++ 12, which the fuzz build uses.)
std::vector<std::string_view> split(std::string_view s, char sep);

// Lowercase hex digits of the bytes.
std::string to_hex(std::span<const uint8_t> bytes);
// The bytes of an even number of hex digits (either case); nullopt for anything else.
std::optional<std::vector<uint8_t>> from_hex(std::string_view hex);

// All of data, or an Error naming `what` (with errno).
void write_all(int fd, std::span<const uint8_t> data, const std::string& what);

// Replaces dir_fd/name with data, crash-safe: a temp file (mode 0600), fsync, rename, fsync of
// the directory. A reader sees the old or the new content, never a mix. Never follows a link.
// `what` names the file in errors.
void write_file_atomic(int dir_fd, const std::string& name, std::span<const uint8_t> data,
                       const std::string& what);
// Same, for an absolute or relative path.
void write_file_atomic(const std::string& path, std::span<const uint8_t> data);

// openat2(2) (glibc 2.36 has no wrapper), close-on-exec, retried while a rename races (EAGAIN).
// An empty UniqueFd with errno set on failure.
UniqueFd open_resolved(int dir_fd, const std::string& path, uint64_t flags, uint64_t resolve);

// Opens a regular file for reading: O_NOFOLLOW (the name is the file), O_NONBLOCK (a FIFO
// cannot hang us), close-on-exec. An empty UniqueFd with errno set when it cannot be opened;
// an Error "<what> is not a regular file" when it is something else. st gets its fstat.
UniqueFd open_regular_file(int dir_fd, const std::string& path, const std::string& what,
                           struct stat& st);

// true when both paths (links followed) name one file: same device and inode.
bool same_file(const std::string& a, const std::string& b);

// Passes one file descriptor over a unix socket (SCM_RIGHTS), and takes one (close-on-exec).
// pipe2(O_CLOEXEC). Throws Error.
struct Pipe {
  UniqueFd read, write;
};
Pipe make_pipe();

// One message with up to kMaxPassedFds fds (SCM_RIGHTS) over a SOCK_SEQPACKET socket. Throws
// Error; at EOF the received message is empty and has no fds.
inline constexpr size_t kMaxPassedFds = 8;
struct FdPacket {
  std::string data;
  std::vector<UniqueFd> fds;
};
void send_packet(int sock, std::string_view data, std::span<const int> fds);
FdPacket receive_packet(int sock, size_t max_size);
// One fd alone (send_packet with one byte of data); receive_fd throws Error unless exactly one
// came.
void send_fd(int sock, int fd);
UniqueFd receive_fd(int sock);

}  // namespace vtpm
