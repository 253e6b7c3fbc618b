#include "vtpm_hook/swtpm_blob.h"

#include <cstddef>
#include <limits>
#include <optional>

#include "vtpm_hook/error.h"

// Layout (all integers big-endian), as written by swtpm 0.7.1; docs/state-format.md has details.
//   blob header, 10 bytes: u8 version | u8 min_version | u16 hdrsize | u16 flags | u32 totlen
//   version 1: the libtpms blob follows the header as it is
//   version 2: TLVs follow the header: u16 tag | u32 length | length bytes

namespace vtpm {
namespace {

constexpr size_t kHeaderSize = 10;
constexpr size_t kTlvHeaderSize = 6;
constexpr uint8_t kHeaderVersion = 2;  // what swtpm 0.7.1 writes and the newest it reads
constexpr uint8_t kMinVersionWritten = 1;

constexpr uint16_t kFlagEncrypted = 0x01;
constexpr uint16_t kFlagMigrationEncrypted = 0x02;
constexpr uint16_t kFlagMigrationData = 0x04;

constexpr uint16_t kTagData = 1;
constexpr uint16_t kTagEncryptedData = 2;
constexpr uint16_t kTagMigrationData = 4;
constexpr uint16_t kTagEncryptedMigrationData = 5;

uint16_t get_u16(std::span<const uint8_t> b, size_t off) {
  return static_cast<uint16_t>((b[off] << 8) | b[off + 1]);
}

uint32_t get_u32(std::span<const uint8_t> b, size_t off) {
  return (uint32_t{b[off]} << 24) | (uint32_t{b[off + 1]} << 16) | (uint32_t{b[off + 2]} << 8) |
         uint32_t{b[off + 3]};
}

void put_u16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

// The value of the first TLV with `tag`, after checking that the whole sequence is well formed.
std::optional<std::span<const uint8_t>> find_tlv(std::span<const uint8_t> tlvs, uint16_t tag,
                                                 size_t base_offset) {
  std::optional<std::span<const uint8_t>> found;
  size_t off = 0;
  while (off < tlvs.size()) {
    const size_t at = base_offset + off;
    if (tlvs.size() - off < kTlvHeaderSize)
      throw Error("corrupt swtpm state file: truncated TLV header at byte " + std::to_string(at));
    const uint16_t t = get_u16(tlvs, off);
    const uint32_t len = get_u32(tlvs, off + 2);
    off += kTlvHeaderSize;
    if (len > tlvs.size() - off)
      throw Error("corrupt swtpm state file: TLV tag " + std::to_string(t) + " at byte " +
                  std::to_string(at) + " claims " + std::to_string(len) + " bytes, only " +
                  std::to_string(tlvs.size() - off) + " follow");
    if (t == tag && !found) found = tlvs.subspan(off, len);
    off += len;
  }
  return found;
}

[[noreturn]] void throw_encrypted() {
  throw Error(
      "swtpm state file is encrypted (written by swtpm with --key or --migration-key); "
      "encrypted state is not supported");
}

}  // namespace

std::vector<uint8_t> wrap_state_blob(std::span<const uint8_t> libtpms_blob) {
  constexpr size_t kOverhead = kHeaderSize + kTlvHeaderSize;
  if (libtpms_blob.size() > std::numeric_limits<uint32_t>::max() - kOverhead)
    throw Error("libtpms state blob of " + std::to_string(libtpms_blob.size()) +
                " bytes is too large for a swtpm state file");
  const auto total = static_cast<uint32_t>(libtpms_blob.size() + kOverhead);
  std::vector<uint8_t> out;
  out.reserve(total);
  out.push_back(kHeaderVersion);
  out.push_back(kMinVersionWritten);
  put_u16(out, kHeaderSize);
  put_u16(out, 0);  // flags: not encrypted
  put_u32(out, total);
  put_u16(out, kTagData);
  put_u32(out, static_cast<uint32_t>(libtpms_blob.size()));
  out.insert(out.end(), libtpms_blob.begin(), libtpms_blob.end());
  return out;
}

std::vector<uint8_t> unwrap_state_blob(std::span<const uint8_t> file_bytes) {
  const std::span<const uint8_t> f = file_bytes;
  if (f.empty()) throw Error("swtpm state file is empty");
  // libtpms blobs start with a big-endian 16-bit format version below 256, so their first byte
  // is 0; a blob header starts with its version, 1 or 2. swtpm reads a file without a valid
  // header as a bare libtpms blob (its format before blob headers existed).
  if (f[0] == 0) return {f.begin(), f.end()};

  const uint8_t version = f[0];
  if (version > kHeaderVersion)
    throw Error("not a swtpm state file, or a newer format: blob header version " +
                std::to_string(version) + " (supported: 1 and 2)");
  if (f.size() < kHeaderSize)
    throw Error("truncated swtpm state file: " + std::to_string(f.size()) +
                " bytes, shorter than the 10-byte blob header");
  const uint8_t min_version = f[1];
  const uint16_t hdrsize = get_u16(f, 2);
  const uint16_t flags = get_u16(f, 4);
  const uint32_t totlen = get_u32(f, 6);
  if (min_version > kHeaderVersion)
    throw Error("swtpm state file needs blob header version " + std::to_string(min_version) +
                " (supported: 1 and 2)");
  if (hdrsize != kHeaderSize)
    throw Error("corrupt swtpm state file: header size " + std::to_string(hdrsize) +
                ", expected 10");
  if (totlen > f.size())
    throw Error("truncated swtpm state file: header says " + std::to_string(totlen) +
                " bytes, file has " + std::to_string(f.size()));
  if (totlen < f.size())
    throw Error("corrupt swtpm state file: header says " + std::to_string(totlen) +
                " bytes, file has " + std::to_string(f.size()));
  if (flags & (kFlagEncrypted | kFlagMigrationEncrypted)) throw_encrypted();

  std::span<const uint8_t> body = f.subspan(kHeaderSize);
  if (version == 1) return {body.begin(), body.end()};

  size_t body_offset = kHeaderSize;
  if (flags & kFlagMigrationData) {  // `swtpm_ioctl --save` output: TLVs nested in a TLV
    const auto mig = find_tlv(body, kTagMigrationData, body_offset);
    if (!mig) {
      if (find_tlv(body, kTagEncryptedMigrationData, body_offset)) throw_encrypted();
      throw Error("corrupt swtpm state file: migration blob without migration data");
    }
    body_offset += static_cast<size_t>(mig->data() - body.data());
    body = *mig;
  }
  const auto data = find_tlv(body, kTagData, body_offset);
  if (!data) {
    if (find_tlv(body, kTagEncryptedData, body_offset)) throw_encrypted();
    throw Error("corrupt swtpm state file: no data (TLV tag 1) after the blob header");
  }
  return {data->begin(), data->end()};
}

std::string state_file_name(TpmVersion v, std::string_view libtpms_name) {
  if (libtpms_name.empty() || libtpms_name == "." || libtpms_name == ".." ||
      libtpms_name.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos)
    throw Error("invalid libtpms state name '" + std::string(libtpms_name) + "'");
  // swtpm: "tpm%s-%02lx.%s" with "2" for TPM 2 and TPM number 0.
  return std::string(v == TpmVersion::V2 ? "tpm2-00." : "tpm-00.") + std::string(libtpms_name);
}

}  // namespace vtpm
