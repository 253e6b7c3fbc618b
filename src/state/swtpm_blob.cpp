#include "state/swtpm_blob.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <cstddef>
#include <limits>
#include <memory>
#include <optional>

#include "common/big_endian.h"
#include "common/error.h"

// Layout (all integers big-endian), as written by swtpm 0.7.1; docs/state-format.md has details.
//   blob header, 10 bytes: u8 version | u8 min_version | u16 hdrsize | u16 flags | u32 totlen
//   version 1: the libtpms blob follows the header as it is
//   version 2: TLVs follow the header: u16 tag | u32 length | length bytes
// Encrypted (swtpm --key): TLVs ENCRYPTED_DATA, HMAC, IVEC; see "Encrypted state" in the doc.

namespace vtpm {
namespace {

constexpr size_t kHeaderSize = 10;
constexpr size_t kTlvHeaderSize = 6;
constexpr uint8_t kHeaderVersion = 2;  // what swtpm 0.7.1 writes and the newest it reads
constexpr uint8_t kMinVersionWritten = 1;

constexpr uint16_t kFlagEncrypted = 0x01;
constexpr uint16_t kFlagMigrationEncrypted = 0x02;
constexpr uint16_t kFlagMigrationData = 0x04;
constexpr uint16_t kFlagEncrypted256BitKey = 0x08;

constexpr uint16_t kTagData = 1;
constexpr uint16_t kTagEncryptedData = 2;
constexpr uint16_t kTagHmac = 3;
constexpr uint16_t kTagMigrationData = 4;
constexpr uint16_t kTagEncryptedMigrationData = 5;
constexpr uint16_t kTagIvecEncryptedData = 6;

constexpr size_t kAesBlock = 16;
constexpr size_t kHmacSize = 32;  // HMAC-SHA256

// Same big-endian layout as TPM commands.
using proto::get_u16;
using proto::get_u32;
using proto::put_u16;
using proto::put_u32;

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
      "state is encrypted; a key is needed (the file was written with a state key, "
      "like swtpm --key)");
}

[[noreturn]] void throw_migration_encrypted() {
  throw Error(
      "swtpm state blob is encrypted with a migration key (swtpm --migration-key); "
      "that is not supported");
}

[[noreturn]] void throw_wrong_key(const std::string& detail) {
  throw Error("wrong key or corrupt state (" + detail + ")");
}

[[noreturn]] void throw_not_encrypted() {
  throw Error(
      "state is not encrypted, but a key was given; swtpm 0.7.1 refuses such a file too "
      "(open it without a key)");
}

void check_key(const StateKey& key) {
  if (key.bytes.size() != 16 && key.bytes.size() != 32)
    throw Error("state key of " + std::to_string(key.bytes.size()) +
                " bytes: AES keys for state files have 16 or 32 bytes");
}

const EVP_CIPHER* aes_cbc(const StateKey& key) {
  return key.bytes.size() == 32 ? EVP_aes_256_cbc() : EVP_aes_128_cbc();
}

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

// AES-CBC without OpenSSL's padding (swtpm pads by itself); iv16 is the 16-byte chaining IV.
std::vector<uint8_t> aes_cbc_raw(bool encrypt, const StateKey& key, const uint8_t* iv16,
                                 std::span<const uint8_t> in) {
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  if (!ctx ||
      EVP_CipherInit_ex(ctx.get(), aes_cbc(key), nullptr, key.bytes.data(), iv16,
                        encrypt ? 1 : 0) != 1 ||
      EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1)
    throw Error("cannot set up AES-CBC");
  if (in.size() > static_cast<size_t>(std::numeric_limits<int>::max()) - kAesBlock)
    throw Error("state too large to encrypt");
  std::vector<uint8_t> out(in.size() + kAesBlock);
  int n1 = 0;
  int n2 = 0;
  if (EVP_CipherUpdate(ctx.get(), out.data(), &n1, in.data(), static_cast<int>(in.size())) != 1 ||
      EVP_CipherFinal_ex(ctx.get(), out.data() + n1, &n2) != 1 ||
      static_cast<size_t>(n1 + n2) != in.size())
    throw Error(std::string("AES-CBC ") + (encrypt ? "encryption" : "decryption") + " failed");
  out.resize(in.size());
  return out;
}

// swtpm pads to a multiple of the key size (16 or 32 bytes, not the AES block size) with
// `pad` bytes of value `pad`, 1 <= pad <= key size.
std::vector<uint8_t> encrypt_padded(const StateKey& key, std::span<const uint8_t> iv16,
                                    std::span<const uint8_t> blob) {
  const size_t k = key.bytes.size();
  const size_t pad = k - blob.size() % k;
  std::vector<uint8_t> padded(blob.begin(), blob.end());
  padded.insert(padded.end(), pad, static_cast<uint8_t>(pad));
  auto out = aes_cbc_raw(true, key, iv16.data(), padded);
  OPENSSL_cleanse(padded.data(), padded.size());
  return out;
}

// The inverse; nullopt when the ciphertext or its padding is malformed.
std::optional<std::vector<uint8_t>> decrypt_padded(const StateKey& key, const uint8_t* iv16,
                                                   std::span<const uint8_t> ct) {
  const size_t k = key.bytes.size();
  if (ct.size() < k || ct.size() % kAesBlock != 0) return std::nullopt;
  std::vector<uint8_t> plain = aes_cbc_raw(false, key, iv16, ct);
  const size_t pad = plain.back();
  if (pad == 0 || pad > k) return std::nullopt;
  for (size_t i = plain.size() - pad; i < plain.size(); ++i)
    if (plain[i] != pad) return std::nullopt;
  plain.resize(plain.size() - pad);
  return plain;
}

std::array<uint8_t, kHmacSize> hmac_sha256(const StateKey& key, std::span<const uint8_t> data,
                                           std::span<const uint8_t> iv) {
  std::vector<uint8_t> msg(data.begin(), data.end());
  msg.insert(msg.end(), iv.begin(), iv.end());
  std::array<uint8_t, kHmacSize> md{};
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.bytes.data(), static_cast<int>(key.bytes.size()), msg.data(),
            msg.size(), md.data(), &len) ||
      len != kHmacSize)
    throw Error("HMAC-SHA256 failed");
  return md;
}

// The TLV body of an encrypted state file: ENCRYPTED_DATA, HMAC, IVEC (swtpm's order).
void put_tlv(std::vector<uint8_t>& out, uint16_t tag, std::span<const uint8_t> value) {
  put_u16(out, tag);
  put_u32(out, static_cast<uint32_t>(value.size()));
  out.insert(out.end(), value.begin(), value.end());
}

std::vector<uint8_t> header(uint16_t flags, size_t total) {
  if (total > std::numeric_limits<uint32_t>::max())
    throw Error("state file of " + std::to_string(total) +
                " bytes is too large for a swtpm state file");
  std::vector<uint8_t> out;
  out.reserve(total);
  out.push_back(kHeaderVersion);
  out.push_back(kMinVersionWritten);
  put_u16(out, kHeaderSize);
  put_u16(out, flags);
  put_u32(out, static_cast<uint32_t>(total));
  return out;
}

// Version 1 and header-less files with a key (swtpm's format before TLVs): AES-CBC with a zero
// IV of SHA256(blob) || blob.
std::vector<uint8_t> decrypt_v1(const StateKey& key, std::span<const uint8_t> body,
                                const std::string& what) {
  const std::array<uint8_t, kAesBlock> zero_iv{};
  auto plain = decrypt_padded(key, zero_iv.data(), body);
  constexpr size_t kSha256 = 32;
  if (!plain || plain->size() < kSha256) throw_wrong_key(what + ": decryption failed");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_Digest(plain->data() + kSha256, plain->size() - kSha256, md, &md_len, EVP_sha256(),
                 nullptr) != 1 ||
      md_len != kSha256)
    throw Error("SHA-256 failed");
  if (CRYPTO_memcmp(md, plain->data(), kSha256) != 0) throw_wrong_key(what + ": hash mismatch");
  return {plain->begin() + kSha256, plain->end()};
}

// The TLV body of a version-2 state file written with a key.
std::vector<uint8_t> decrypt_v2(const StateKey& key, std::span<const uint8_t> body, uint16_t flags,
                                size_t body_offset) {
  const auto enc = find_tlv(body, kTagEncryptedData, body_offset);
  const auto mac = find_tlv(body, kTagHmac, body_offset);
  if (!enc || !mac) {
    if (find_tlv(body, kTagData, body_offset)) throw_not_encrypted();
    throw Error("corrupt swtpm state file: encrypted data (TLV tag 2) or its HMAC (tag 3) missing");
  }
  const size_t need = (flags & kFlagEncrypted256BitKey) ? 32 : 16;
  if (key.bytes.size() != need)
    throw Error("wrong key: the state was written with a " + std::to_string(need * 8) +
                "-bit key, the key given has " + std::to_string(key.bytes.size() * 8) + " bits");
  const auto iv = find_tlv(body, kTagIvecEncryptedData, body_offset);
  if (mac->size() < kHmacSize)
    throw Error("corrupt swtpm state file: HMAC of " + std::to_string(mac->size()) + " bytes");
  const auto md = hmac_sha256(key, *enc, iv ? *iv : std::span<const uint8_t>{});
  if (CRYPTO_memcmp(md.data(), mac->data(), kHmacSize) != 0) throw_wrong_key("HMAC mismatch");
  // Without an IVEC TLV (swtpm could not get random bytes) the IV is all zeros.
  std::array<uint8_t, kAesBlock> iv16{};
  if (iv) {
    if (iv->size() != key.bytes.size())
      throw Error("corrupt swtpm state file: IV of " + std::to_string(iv->size()) +
                  " bytes for a " + std::to_string(key.bytes.size()) + "-byte key");
    std::copy(iv->begin(), iv->begin() + kAesBlock, iv16.begin());
  }
  auto plain = decrypt_padded(key, iv16.data(), *enc);
  if (!plain) throw Error("corrupt swtpm state file: bad encrypted data or padding");
  return std::move(*plain);
}

}  // namespace

namespace detail {

std::vector<uint8_t> wrap_encrypted_state_blob(std::span<const uint8_t> libtpms_blob,
                                               const StateKey& key, std::span<const uint8_t> iv) {
  check_key(key);
  if (iv.size() != key.bytes.size())
    throw Error("IV of " + std::to_string(iv.size()) + " bytes for a " +
                std::to_string(key.bytes.size()) + "-byte key");
  if (libtpms_blob.size() > std::numeric_limits<uint32_t>::max() - 4096)
    throw Error("libtpms state blob of " + std::to_string(libtpms_blob.size()) +
                " bytes is too large for a swtpm state file");
  const auto ct = encrypt_padded(key, iv, libtpms_blob);
  const auto md = hmac_sha256(key, ct, iv);
  const size_t total = kHeaderSize + 3 * kTlvHeaderSize + ct.size() + md.size() + iv.size();
  const uint16_t flags =
      kFlagEncrypted | (key.bytes.size() == 32 ? kFlagEncrypted256BitKey : uint16_t{0});
  std::vector<uint8_t> out = header(flags, total);
  put_tlv(out, kTagEncryptedData, ct);
  put_tlv(out, kTagHmac, md);
  put_tlv(out, kTagIvecEncryptedData, iv);
  return out;
}

}  // namespace detail

std::vector<uint8_t> wrap_state_blob(std::span<const uint8_t> libtpms_blob, const StateKey* key) {
  if (key) {
    check_key(*key);
    std::vector<uint8_t> iv(key->bytes.size());
    if (RAND_bytes(iv.data(), static_cast<int>(iv.size())) != 1)
      throw Error("cannot get random bytes for the state file's IV");
    return detail::wrap_encrypted_state_blob(libtpms_blob, *key, iv);
  }
  constexpr size_t kOverhead = kHeaderSize + kTlvHeaderSize;
  if (libtpms_blob.size() > std::numeric_limits<uint32_t>::max() - kOverhead)
    throw Error("libtpms state blob of " + std::to_string(libtpms_blob.size()) +
                " bytes is too large for a swtpm state file");
  std::vector<uint8_t> out = header(0, libtpms_blob.size() + kOverhead);  // flags: not encrypted
  put_tlv(out, kTagData, libtpms_blob);
  return out;
}

std::vector<uint8_t> unwrap_state_blob(std::span<const uint8_t> file_bytes, const StateKey* key) {
  if (key) check_key(*key);
  const std::span<const uint8_t> f = file_bytes;
  if (f.empty()) throw Error("swtpm state file is empty");
  // libtpms blobs start with a big-endian 16-bit format version below 256, so their first byte
  // is 0; a blob header starts with its version, 1 or 2. swtpm reads a file without a valid
  // header as a bare libtpms blob (its format before blob headers existed) or, when it has a
  // key, as that format encrypted.
  const uint8_t version = f[0];
  if (version == 0 || (key && version > kHeaderVersion)) {
    if (!key) return {f.begin(), f.end()};
    return decrypt_v1(*key, f,
                      version == 0 ? "no blob header: an unencrypted file of swtpm's oldest "
                                     "format, or that format encrypted with another key"
                                   : "no blob header");
  }
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
  if (flags & kFlagMigrationEncrypted) throw_migration_encrypted();
  if (!key && (flags & kFlagEncrypted)) throw_encrypted();

  std::span<const uint8_t> body = f.subspan(kHeaderSize);
  if (version == 1) {
    // swtpm 0.7.1 decrypts a version-1 body whenever it has a key, whatever the flags say.
    if (key) return decrypt_v1(*key, body, "version-1 file");
    return {body.begin(), body.end()};
  }

  size_t body_offset = kHeaderSize;
  if (flags & kFlagMigrationData) {  // `swtpm_ioctl --save` output: TLVs nested in a TLV
    const auto mig = find_tlv(body, kTagMigrationData, body_offset);
    if (!mig) {
      if (find_tlv(body, kTagEncryptedMigrationData, body_offset)) throw_migration_encrypted();
      throw Error("corrupt swtpm state file: migration blob without migration data");
    }
    body_offset += static_cast<size_t>(mig->data() - body.data());
    body = *mig;
  }
  // Like swtpm, a key means a state file must be encrypted: the flags are not asked. A
  // migration blob (CMD_SET_STATEBLOB) is decrypted only when its flags say so.
  const bool migration = flags & kFlagMigrationData;
  if (key && (!migration || (flags & kFlagEncrypted)))
    return decrypt_v2(*key, body, flags, body_offset);
  const auto data = find_tlv(body, kTagData, body_offset);
  if (!data) {
    if (find_tlv(body, kTagEncryptedData, body_offset)) throw_encrypted();
    throw Error("corrupt swtpm state file: no data (TLV tag 1) after the blob header");
  }
  return {data->begin(), data->end()};
}

bool state_blob_sealed(std::span<const uint8_t> f) {
  return f.size() >= kHeaderSize && (f[0] == 1 || f[0] == kHeaderVersion) &&
         (get_u16(f, 4) & kFlagEncrypted);
}

std::string state_file_name(TpmVersion v, std::string_view libtpms_name) {
  if (libtpms_name.empty() || libtpms_name == "." || libtpms_name == ".." ||
      libtpms_name.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos)
    throw Error("invalid libtpms state name '" + std::string(libtpms_name) + "'");
  // swtpm: "tpm%s-%02lx.%s" with "2" for TPM 2 and TPM number 0.
  return std::string(v == TpmVersion::V2 ? "tpm2-00." : "tpm-00.") + std::string(libtpms_name);
}

}  // namespace vtpm
