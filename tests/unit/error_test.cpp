// Errors keep their kind, errno and context on the way to the one line a user sees.
#include "common/error.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace vtpm {
namespace {

TEST(WithContext, PrefixesAndKeepsErrno) {
  try {
    with_context("open state", [] { throw sys_error("openat x", ENOENT); });
    FAIL() << "no exception";
  } catch (const SysError& e) {
    EXPECT_EQ(e.err, ENOENT);
    EXPECT_STREQ(e.what(), "open state: openat x: No such file or directory");
  }
}

TEST(WithContext, LibraryExceptionsBecomeErrors) {
  try {
    with_context("run record /r/x.json is corrupt", [] { throw std::out_of_range("key 'id'"); });
    FAIL() << "no exception";
  } catch (const SysError&) {
    FAIL() << "not a system error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "run record /r/x.json is corrupt: key 'id'");
  }
}

TEST(WithContext, PassesTheResultThrough) {
  EXPECT_EQ(with_context("x", [] { return 42; }), 42);
  int n = 0;
  with_context("x", [&] { ++n; });
  EXPECT_EQ(n, 1);
}

}  // namespace
}  // namespace vtpm
