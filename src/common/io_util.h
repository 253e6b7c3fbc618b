#pragma once
// Whole reads and writes on file descriptors, retried on EINTR and short transfers.
#include <cstdint>
#include <span>
#include <string>

#include "common/unique_fd.h"

namespace vtpm {

// Everything up to EOF; more than max_size bytes is an Error naming `what`.
std::string read_all(int fd, size_t max_size, const std::string& what);

// All of data, or an Error naming `what` (with errno).
void write_all(int fd, std::span<const uint8_t> data, const std::string& what);

// Passes one file descriptor over a unix socket (SCM_RIGHTS), and takes one (close-on-exec).
void send_fd(int sock, int fd);
UniqueFd receive_fd(int sock);

}  // namespace vtpm
