#pragma once
// One exception type for every failure: its message is the one line a user sees.
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace vtpm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "what: strerror(errno)" as an Error, for failed system calls.
inline Error sys_error(const std::string& what, int err = errno) {
  return Error(what + ": " + std::strerror(err));
}

}  // namespace vtpm
