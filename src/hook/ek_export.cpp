#include "hook/ek_export.h"

#include <fcntl.h>
#include <spdlog/fmt/fmt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/io_util.h"
#include "hook/hooks.h"
#include "hook/run_record.h"
#include "oci/measurement.h"
#include "oci/oci_state.h"
#include "oci/vtpm_request.h"
#include "state/state_dir.h"
#include "state/state_store.h"
#include "tpm/measure.h"
#include "tpm/provision.h"

namespace vtpm {
namespace {

constexpr size_t kMaxPemSize = 64 * 1024;
constexpr size_t kMaxLogSize = 16u << 20;  // the config.json it holds is read up to that size

// A public file, maybe in a directory its TPM's emulator may write to: no link, no FIFO, capped.
std::optional<std::string> read_public_file(int dir_fd, const std::string& name,
                                            const std::string& what) {
  struct stat st {};
  UniqueFd fd = open_regular_file(dir_fd, name, what, st);
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw sys_error("open " + what);
  }
  return read_all(fd.get(), kMaxPemSize, what);
}

const EkSlot& slot_of(const CertificateInfo& c) { return c.rsa ? kEkSlots[0] : kEkSlots[1]; }

}  // namespace

std::string render_measurement_log(const HookOptions& opts, const std::string& id, unsigned index,
                                   bool replay) {
  validate_container_id(id, "--id");
  const auto rec = read_run_record(opts.run_root, id);
  if (!rec)
    throw Error(
        fmt::format("container {} is not running (its log went with its TPM's PCR values)", id));
  const auto v = std::find_if(rec->vtpms.begin(), rec->vtpms.end(),
                              [&](const VtpmRecord& v) { return v.index == index; });
  if (v == rec->vtpms.end()) throw Error(fmt::format("container {} has no vTPM {}", id, index));
  const std::string path = measurement_log_path(opts.run_root, id, index);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd && errno == ENOENT)
    throw Error(fmt::format("container {}'s vTPM {} has no measured launch (policy measurementPcr)",
                            id, index));
  if (!fd) throw sys_error("open " + path);
  const std::string text = read_all(fd.get(), kMaxLogSize, path);
  if (!replay) return text;
  const auto records = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!records.is_array() || records.empty() || !records[0].contains("pcr"))
    throw Error(path + " is not a measured launch's log");
  const unsigned pcr = records[0]["pcr"].get<unsigned>();
  nlohmann::json banks = nlohmann::json::object();
  for (const auto& [bank, value] : replay_cel(text, pcr, measurement_start_byte(v->version, pcr)))
    banks[bank] = to_hex(value);
  return nlohmann::json{{"pcr", pcr}, {"banks", banks}}.dump() + "\n";
}

std::vector<CertificateInfo> read_ek_certificates(const std::string& root,
                                                  const std::string& state_path) {
  const StateDir dir = open_state_dir(root, state_path, /*create=*/false);
  const std::string what = state_path + "/" + kEkCertificatesFile;
  const auto pem = read_public_file(dir.fd.get(), kEkCertificatesFile, what);
  return pem ? parse_certificates(*pem, what) : std::vector<CertificateInfo>{};
}

EkExport find_ek_certificates(const HookOptions& opts, const std::string& id, unsigned index) {
  validate_container_id(id, "--id");
  EkExport out{id, index, "", {}};
  std::string root = opts.state_root;
  if (const auto rec = read_run_record(opts.run_root, id)) {
    for (const auto& v : rec->vtpms)
      if (v.index == index) {
        out.state_path = v.state_path;
        root = v.state_root;
      }
    if (out.state_path.empty()) throw Error(fmt::format("container {} has no vTPM {}", id, index));
  } else {
    // Not running: its default state dir (setup's naming; a statePath of its own is not known).
    RequestDefaults d;
    d.state_root = opts.state_root;
    out.state_path = container_state_path(d, id, index);
    if (::access(out.state_path.c_str(), F_OK) != 0 && errno == ENOENT)
      throw Error(
          fmt::format("no live container {} and no default state {} (a stopped "
                      "container's own statePath is not known)",
                      id, out.state_path));
  }
  out.eks = read_ek_certificates(root, out.state_path);
  if (out.eks.empty())
    throw Error(
        fmt::format("vTPM {} of {} ({}) has no EK certificates: it was not created with "
                    "createCerts",
                    index, id, out.state_path));
  return out;
}

std::string render_ek(const EkExport& ek, bool json) {
  if (json) {
    nlohmann::json keys = nlohmann::json::array();
    for (const auto& c : ek.eks)
      keys.push_back({{"type", c.rsa ? "rsa" : "ecc"},
                      {"bits", c.bits},
                      {"handle", fmt::format("0x{:08x}", slot_of(c).persistent_handle)},
                      {"nvIndex", fmt::format("0x{:08x}", slot_of(c).nv_index)},
                      {"publicKeySha256", c.public_key_sha256},
                      {"publicKey", c.public_key_pem},
                      {"certificate", c.certificate_pem}});
    return nlohmann::json{{"containerId", ek.container_id},
                          {"index", ek.index},
                          {"statePath", ek.state_path},
                          {"eks", keys}}
               .dump(2) +
           "\n";
  }
  std::string out;
  for (const auto& c : ek.eks)
    out += fmt::format(
        "# {} vTPM {}: EK {} {} (handle 0x{:08x}, certificate in NV 0x{:08x}), public key "
        "SHA-256 {}\n{}{}",
        one_line(ek.container_id), ek.index, c.rsa ? "RSA" : "ECC", c.bits,
        slot_of(c).persistent_handle, slot_of(c).nv_index, c.public_key_sha256, c.public_key_pem,
        c.certificate_pem);
  return out;
}

std::string render_ca(const HookOptions& opts) {
  const auto pem = read_public_file(AT_FDCWD, opts.ca_cert, opts.ca_cert);
  if (!pem)
    throw Error("no local CA at " + opts.ca_cert +
                " yet: the first TPM with createCerts creates it");
  const auto certs = parse_certificates(*pem, opts.ca_cert);
  if (certs.size() != 1) throw Error(opts.ca_cert + " does not hold exactly one certificate");
  return certs[0].certificate_pem;
}

}  // namespace vtpm
