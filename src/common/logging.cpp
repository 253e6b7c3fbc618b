#include "common/logging.h"

#include <limits.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

#include "common/error.h"

namespace vtpm {
namespace {

spdlog::level::level_enum parse_level(const std::string& level) {
  auto l = spdlog::level::from_str(level);
  if (l == spdlog::level::off && level != "off")
    throw Error("unknown log level \"" + level + "\" (trace, debug, info, warn, error, off)");
  return l;
}

void install(std::vector<spdlog::sink_ptr> sinks, const std::string& level,
             const std::string& name) {
  auto logger = std::make_shared<spdlog::logger>(name, sinks.begin(), sinks.end());
  logger->set_level(parse_level(level));
  for (auto& s : sinks)
    if (dynamic_cast<spdlog::sinks::basic_file_sink_st*>(s.get()))
      s->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n[%P] %l: %v");
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

// Whole lines to a pipe, each in one write (a pipe keeps writes up to PIPE_BUF whole).
class PipeSink : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  explicit PipeSink(int fd) : fd_(fd) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    (void)!::write(fd_, line.data(), std::min<size_t>(line.size(), PIPE_BUF));
  }
  void flush_() override {}

 private:
  int fd_;
};

}  // namespace

void init_pipe_logging(const std::string& level, int pipe_fd, const std::string& tag) {
  auto sink = std::make_shared<PipeSink>(pipe_fd);
  auto logger = std::make_shared<spdlog::logger>(tag, sink);
  logger->set_level(parse_level(level));
  sink->set_pattern("%l: %v");  // the keeper adds the time and who said it
  spdlog::set_default_logger(logger);
}

void init_logging(const std::string& level, const std::string& log_file) {
  std::vector<spdlog::sink_ptr> sinks;
  auto err = std::make_shared<spdlog::sinks::stderr_sink_st>();
  // A runtime shows a failed hook's stderr: keep it to warnings and the one error line,
  // unless someone asked for debugging output.
  const auto lvl = parse_level(level);
  err->set_level(lvl < spdlog::level::info ? lvl : std::max(lvl, spdlog::level::warn));
  err->set_pattern("%n: %l: %v");
  sinks.push_back(err);
  if (!log_file.empty()) {
    with_context("cannot open log file " + log_file, [&] {
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_st>(log_file));
    });
  }
  install(std::move(sinks), level, "vtpm-hook");
}

void init_emulator_logging(const std::string& level, const std::string& log_file,
                           const std::string& tag) {
  std::vector<spdlog::sink_ptr> sinks;
  if (!log_file.empty()) {
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_st>(log_file));
    } catch (const spdlog::spdlog_ex&) {
      // No stderr to complain to; run without a log rather than not at all.
    }
  }
  install(std::move(sinks), level, tag);
}

}  // namespace vtpm
