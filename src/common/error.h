#pragma once
// One exception type for every failure: its message is the one line a user sees.
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace vtpm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A failed system call: the message says what failed and why, `err` keeps the errno.
struct SysError : Error {
  SysError(const std::string& what, int e) : Error(what + ": " + std::strerror(e)), err(e) {}
  // An already complete message (context added to one; see with_context).
  struct Whole {};
  SysError(Whole, const std::string& message, int e) : Error(message), err(e) {}
  int err;
};

// "what: strerror(errno)" as a SysError, for failed system calls.
inline SysError sys_error(const std::string& what, int err = errno) { return SysError(what, err); }

// The one way to add context to a failure: runs f; what it throws comes out as
// "context: message", of the same kind (a SysError keeps its errno), and any other
// std::exception (a library's) as an Error.
template <typename F>
decltype(auto) with_context(const std::string& context, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const SysError& e) {
    throw SysError(SysError::Whole{}, context + ": " + e.what(), e.err);
  } catch (const std::exception& e) {
    throw Error(context + ": " + e.what());
  }
}

// Messages quote untrusted input: control characters become \\xNN, so a line stays one line.
std::string one_line(std::string_view msg);

}  // namespace vtpm
