#pragma once
// The only module that talks to the kernel's vtpm proxy (/dev/vtpmx) and its sysfs.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "common/dev_num.h"
#include "common/tpm_version.h"
#include "common/unique_fd.h"

namespace vtpm {

struct ProxyDevice {
  UniqueFd server_fd;  // close-on-exec; the device lives as long as this fd
  unsigned tpm_num = 0;
};

struct HostDevices {
  unsigned tpm_num = 0;
  DevNum tpm;
  std::optional<DevNum> tpmrm;  // TPM 2 only
};

ProxyDevice create_proxy_device(TpmVersion v, const std::string& vtpmx = "/dev/vtpmx");

// Throws Error when /dev/vtpmx is missing, naming the module to load.
void check_vtpmx_available(const std::string& vtpmx = "/dev/vtpmx");

// Reads "M:m" from /sys/class/tpm/tpmN/dev (and tpmrm). nullopt while not registered yet.
std::optional<HostDevices> read_host_devices(unsigned tpm_num, TpmVersion v,
                                             const std::string& sysfs = "/sys/class");

// The host's /dev/tpmN and /dev/tpmrmN of a vTPM: root:root 0600, so that no host user or
// group (Debian's tpm-udev rules give them to tss, 0660) opens a container's TPM outside its
// device cgroup. Nodes that are missing, or are not these devices, are left alone. The udev rule
// the install ships keeps them so on later events. Throws Error.
void restrict_host_nodes(const HostDevices& host, const std::string& dev_dir = "/dev");

}  // namespace vtpm
