#pragma once
// Helpers for tests: failures reported as vtpm::Error, and a scratch directory per test.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"

namespace vtpm::testing {

// A directory path of this test's own: <tmp>/vtpm-<what>-<pid>-<test name>, not yet created.
inline std::filesystem::path test_dir(const std::string& what) {
  return std::filesystem::temp_directory_path() /
         ("vtpm-" + what + "-" + std::to_string(::getpid()) + "-" +
          ::testing::UnitTest::GetInstance()->current_test_info()->name());
}

// The message of the Error that f throws; fails the test when nothing (or something else) is
// thrown.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-vtpm exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

// Asserts that f() throws vtpm::Error whose message contains every needle.
template <typename F>
void expect_error(F f, const std::vector<std::string>& needles) {
  const std::string msg = error_of(f);
  for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << msg << " / " << n;
}

}  // namespace vtpm::testing
