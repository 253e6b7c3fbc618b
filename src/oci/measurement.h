#pragma once
// What a measured launch extends into the vTPM's PCR, as pure functions (no TPM): the measured
// projection of config.json, the image event, their RFC 8785 (JCS) bytes and per-bank
// digests, and the TCG Canonical Event Log (JSON) that lets a verifier replay the PCR.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vtpm {

// The version of the projection below; a verifier reads it from event 1's "form".
inline constexpr std::string_view kMeasuredConfigForm = "vtpm-hook/oci-config/1";
// The CEL content_type of every record (no TCG-registered type fits; CEL JSON names by string).
inline constexpr std::string_view kCelContentType = "vtpm_hook";

// RFC 8785 (JCS) canonical JSON: members sorted by UTF-16 code units, strings as nlohmann's
// strict dump, numbers as ES6. Integer values beyond +-(2^53-1) become strings of their exact
// digits (RFC 8785 section 6). Throws Error on NaN/Infinity, invalid UTF-8, and a float that
// is integral with magnitude >= 2^53 (nlohmann parses integer tokens beyond uint64/int64 as
// floats; such a value has no exact integer form a verifier would agree on).
std::string canonical_json(const nlohmann::json& v);
// canonical_json without the integral-float refusal: every float in its ES6 form (1E30 ->
// 1e+30), as RFC 8785's own vectors have it. For those vectors; config.json uses canonical_json.
std::string canonical_json_rfc8785(const nlohmann::json& v);
// ES6 Number.prototype.toString of a double (RFC 8785 section 3.2.2.3); -0 -> "0". Throws
// Error on NaN/Infinity.
std::string es6_number(double x);

// The measured projection of a whole config.json (vtpm-hook/oci-config/1): the fields that say
// what runs and with which rights, copied as they are; host-specific and per-instance fields
// (root.path, hooks, annotations, hostname, bind-mount sources, namespace paths, ...) left
// out. Unknown fields are not measured.
nlohmann::json measured_config(const nlohmann::json& config);

// Which engine's annotations name the image (policy measurementImage).
enum class ImageSource { None, Containerd, CriO };
std::string_view to_string(ImageSource s);  // "none", "containerd", "cri-o"

struct LaunchEvent {
  nlohmann::json
      content;  // {"event":"oci-config",...} / {"event":"image",...} / {"event":"separator"}
  std::string canonical;                                // canonical_json(content)
  std::map<std::string, std::vector<uint8_t>> digests;  // bank -> H_bank(canonical)
};

// Every bank name of kPcrBanks.
std::vector<std::string> all_bank_names();

// The three events in order: config (of the whole config.json document), image (from its
// "annotations" per `src`), separator, with the digests of `banks` (names of kPcrBanks).
// Throws Error as canonical_json does.
std::vector<LaunchEvent> launch_events(const nlohmann::json& config, ImageSource src,
                                       std::span<const std::string> banks = all_bank_names());

// Adds the digests of the banks the events lack (a second vTPM with other active banks).
void add_bank_digests(std::vector<LaunchEvent>& events, std::span<const std::string> banks);

// H_bank(data) for a bank name of kPcrBanks ("sha1", ..., "sm3_256"); Error for another name.
std::vector<uint8_t> bank_digest(std::string_view bank, std::string_view data);

// CEL JSON (array, 2-space indent) of the events for `pcr`, with the digests of `banks` only
// (bank names as kPcrBanks; ordered by TPM_ALG_ID), content_type "vtpm_hook", recnum 0..n-1.
std::string cel_log(const std::vector<LaunchEvent>& events, unsigned pcr,
                    const std::vector<std::string>& banks);

// Replays a CEL log's records for `pcr` from every byte start_byte (0; a TPM 1.2's PCRs 20-22
// start from all ones): bank -> expected PCR value. Throws Error if the text is not such a log or
// a record's digest is not H(canonical_json(content)).
std::map<std::string, std::vector<uint8_t>> replay_cel(std::string_view cel_text, unsigned pcr,
                                                       uint8_t start_byte = 0);

}  // namespace vtpm
