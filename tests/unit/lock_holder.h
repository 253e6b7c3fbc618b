#pragma once
// For tests: another process holding a state dir's lock (fcntl locks never conflict within one
// process), as a running emulator does.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "state/state_store.h"

namespace vtpm {

// A child process that holds the state dir's lock until told to go (or for hold_ms).
class LockHolder {
 public:
  LockHolder(const std::string& dir, int hold_ms = -1) {
    int ready[2], go[2];
    if (::pipe(ready) != 0 || ::pipe(go) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      ::close(ready[0]);
      ::close(go[1]);
      char c = 'x';
      try {
        StateStore s(dir, TpmVersion::V2, true);
        if (::write(ready[1], &c, 1) != 1) ::_exit(3);
        if (hold_ms >= 0) {
          ::usleep(static_cast<useconds_t>(hold_ms) * 1000);
        } else {
          // until the parent writes or dies (either way the child then exits)
          if (::read(go[0], &c, 1) < 0) ::_exit(0);
        }
      } catch (...) {
        ::_exit(2);
      }
      ::_exit(0);
    }
    ::close(ready[1]);
    ::close(go[0]);
    go_fd_ = go[1];
    char c = 0;
    const ssize_t r = ::read(ready[0], &c, 1);
    ::close(ready[0]);
    if (r != 1) {
      wait();
      throw std::runtime_error("lock holder child failed to take the lock");
    }
  }
  ~LockHolder() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  pid_t pid() const { return pid_; }
  // Lets the child exit and reaps it; returns its exit status.
  int release() {
    ::close(go_fd_);
    go_fd_ = -1;
    return wait();
  }
  int wait() {
    int status = -1;
    if (pid_ > 0) ::waitpid(pid_, &status, 0);
    pid_ = 0;
    if (go_fd_ >= 0) ::close(go_fd_);
    go_fd_ = -1;
    return status;
  }

 private:
  pid_t pid_ = 0;
  int go_fd_ = -1;
};

}  // namespace vtpm
