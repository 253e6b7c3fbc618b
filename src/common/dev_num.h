#pragma once

namespace vtpm {

// A character device's number, as the kernel's sysfs shows it ("M:m").
struct DevNum {
  unsigned major = 0;
  unsigned minor = 0;
};

}  // namespace vtpm
