#pragma once
#include <string>

namespace vtpm {

// stderr always, plus an appended file when log_file is non-empty. A hook's stdout is never a log.
void init_logging(const std::string& level, const std::string& log_file);

// For the detached emulator: it has no stderr, so it logs to the file only (or nowhere).
void init_emulator_logging(const std::string& level, const std::string& log_file,
                           const std::string& tag);

// For a sandboxed emulator whose keeper relays its log: one formatted line per write() to
// pipe_fd (non-blocking: a line the pipe cannot take is dropped, the TPM never waits for it).
void init_pipe_logging(const std::string& level, int pipe_fd, const std::string& tag);

}  // namespace vtpm
