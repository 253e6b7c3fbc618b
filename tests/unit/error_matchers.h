#pragma once
// Helpers for tests of code that reports failures as vtpm::Error.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.h"

namespace vtpm::testing {

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
