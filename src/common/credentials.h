#pragma once
#include <sys/types.h>

namespace vtpm {

// A user and group the emulator runs as (runAs), resolved by the hook.
struct Credentials {
  uid_t uid = 0;
  gid_t gid = 0;
};

}  // namespace vtpm
