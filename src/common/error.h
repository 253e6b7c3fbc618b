#pragma once
// One exception type for every failure: its message is the one line a user sees.
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

namespace vtpm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A failed system call: the message says what failed and why, `err` keeps the errno.
struct SysError : Error {
  SysError(const std::string& what, int e) : Error(what + ": " + std::strerror(e)), err(e) {}
  int err;
};

// "what: strerror(errno)" as a SysError, for failed system calls.
inline SysError sys_error(const std::string& what, int err = errno) { return SysError(what, err); }

// Messages quote untrusted input: control characters become \\xNN, so a line stays one line.
std::string one_line(std::string_view msg);

}  // namespace vtpm
