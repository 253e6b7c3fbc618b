#pragma once
// What a verifier needs from the host to trust a container's TPM: its EK public keys and EK
// certificates (`vtpm-hook ek`), and the local CA that signed them (`vtpm-hook ca`). Read from
// the copies made when the certificates were created: never from a running TPM.
#include <optional>
#include <string>
#include <vector>

#include "tpm/local_ca.h"

namespace vtpm {

struct HookOptions;

struct EkExport {
  std::string container_id;
  unsigned index = 0;
  std::string state_path;
  std::vector<CertificateInfo> eks;  // RSA first, then ECC
};

// The EK certificates of vTPM `index` of container `id`: the state dir named by its run record
// while it runs, else its default one. Throws Error when it has none (no createCerts).
EkExport find_ek_certificates(const HookOptions& opts, const std::string& id, unsigned index);

// The EK certificates kept in a state dir beneath root; empty when it has none.
std::vector<CertificateInfo> read_ek_certificates(const std::string& root,
                                                  const std::string& state_path);

// PEM (with a comment line per key) or one JSON object.
std::string render_ek(const EkExport& ek, bool json);

// The measured launch's event log (TCG CEL JSON) of a running container's vTPM `index`, as
// setup wrote it; with `replay`, {"pcr": N, "banks": {"sha256": "<hex>", ...}}: the values its
// PCR must have now (before the workload extended it). Throws Error when the container is not
// running (its log went with its PCR values) or its launch was not measured.
std::string render_measurement_log(const HookOptions& opts, const std::string& id, unsigned index,
                                   bool replay);

// The local CA's certificate as PEM. Throws Error when there is no CA yet.
std::string render_ca(const HookOptions& opts);

}  // namespace vtpm
