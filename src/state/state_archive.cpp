#include "state/state_archive.h"

#include <fcntl.h>
#include <libtpms/tpm_nvfilename.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/big_endian.h"
#include "common/error.h"
#include "common/io_util.h"
#include "state/state_dir.h"
#include "state/state_store.h"
#include "state/swtpm_blob.h"

namespace vtpm {
namespace {

using proto::get_u16;
using proto::get_u32;
using proto::put_u16;
using proto::put_u32;

// magic | u16 format | u8 kdf | u8 0 | u32 iterations | salt | nonce, all of it the AEAD's
// associated data; then the AES-256-GCM ciphertext of the CBOR payload and the 16-byte tag.
constexpr std::string_view kMagic = "vtpm-hook export";  // 16 bytes
constexpr size_t kSaltSize = 16, kNonceSize = 12, kTagSize = 16, kKeySize = 32;
constexpr size_t kHeaderSize = 16 + 2 + 1 + 1 + 4 + kSaltSize + kNonceSize;
constexpr uint32_t kMinIterations = 1000, kMaxIterations = 10'000'000;

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

StateKey derive_key(const ArchiveSecret& s, std::span<const uint8_t> salt, uint32_t iterations) {
  if (s.kind == ArchiveSecret::Kind::Key) {
    if (s.bytes.bytes.size() != kKeySize)
      throw Error("an export key has 32 bytes, this one " + std::to_string(s.bytes.bytes.size()));
    return StateKey(s.bytes.bytes);
  }
  StateKey key{std::vector<uint8_t>(kKeySize)};
  if (PKCS5_PBKDF2_HMAC(reinterpret_cast<const char*>(s.bytes.bytes.data()),
                        static_cast<int>(s.bytes.bytes.size()), salt.data(),
                        static_cast<int>(salt.size()), static_cast<int>(iterations), EVP_sha512(),
                        kKeySize, key.bytes.data()) != 1)
    throw Error("PBKDF2 key derivation failed");
  return key;
}

// AES-256-GCM, one shot. decrypt: false when the tag does not match.
bool gcm(bool encrypt, const StateKey& key, std::span<const uint8_t> nonce,
         std::span<const uint8_t> aad, std::span<const uint8_t> in, std::vector<uint8_t>& out,
         uint8_t* tag) {
  CipherCtx ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  int n = 0;
  out.resize(in.size());
  if (!ctx ||
      EVP_CipherInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr, encrypt) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(nonce.size()),
                          nullptr) != 1 ||
      EVP_CipherInit_ex(ctx.get(), nullptr, nullptr, key.bytes.data(), nonce.data(), encrypt) !=
          1 ||
      EVP_CipherUpdate(ctx.get(), nullptr, &n, aad.data(), static_cast<int>(aad.size())) != 1 ||
      EVP_CipherUpdate(ctx.get(), out.data(), &n, in.data(), static_cast<int>(in.size())) != 1)
    throw Error("AES-256-GCM failed");
  if (!encrypt &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagSize), tag) != 1)
    throw Error("AES-256-GCM failed");
  int fin = 0;
  if (EVP_CipherFinal_ex(ctx.get(), out.data() + n, &fin) != 1) {
    if (encrypt) throw Error("AES-256-GCM failed");
    OPENSSL_cleanse(out.data(), out.size());
    return false;
  }
  if (encrypt &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagSize), tag) != 1)
    throw Error("AES-256-GCM failed");
  return true;
}

bool exists(int dir_fd, const std::string& name) {
  struct stat st {};
  return ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

// Sealed with a state key, or readable without one; an Error for a file that is neither.
bool sealed_with_state_key(std::span<const uint8_t> file, const std::string& what) {
  if (state_blob_sealed(file)) return true;
  with_context(what, [&] { (void)unwrap_state_blob(file); });
  return false;
}

}  // namespace

ArchiveSecret load_archive_secret(const std::string& key_file, const std::string& password_file) {
  if (key_file.empty() == password_file.empty())
    throw Error("give exactly one of --key-file and --password-file");
  if (!key_file.empty()) return {ArchiveSecret::Kind::Key, load_key_file(key_file, "binary", 256)};
  return {ArchiveSecret::Kind::Password, read_password_file(password_file)};
}

std::string libtpms_version_string(uint32_t v) {
  return std::to_string((v >> 16) & 0xff) + "." + std::to_string((v >> 8) & 0xff) + "." +
         std::to_string(v & 0xff);
}

std::vector<uint8_t> seal_archive(const StateArchive& a, const ArchiveSecret& secret,
                                  uint32_t iterations) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : a.files)
    files.push_back({{"name", f.name}, {"data", nlohmann::json::binary(f.data)}});
  const nlohmann::json payload{{"format", kArchiveFormat},
                               {"tpmVersion", to_string(a.version)},
                               {"libtpmsVersion", a.libtpms_version},
                               {"source", a.source},
                               {"exportedAt", a.exported_at},
                               {"encryptedAtRest", a.encrypted_at_rest},
                               {"files", files}};
  std::vector<uint8_t> plain = nlohmann::json::to_cbor(payload);

  const bool pwd = secret.kind == ArchiveSecret::Kind::Password;
  std::vector<uint8_t> out(kMagic.begin(), kMagic.end());
  put_u16(out, kArchiveFormat);
  out.push_back(static_cast<uint8_t>(secret.kind));
  out.push_back(0);
  put_u32(out, pwd ? iterations : 0);
  out.resize(kHeaderSize);  // salt (zero for a key file) and nonce
  const std::span<uint8_t> salt(&out[kHeaderSize - kNonceSize - kSaltSize], kSaltSize),
      nonce(&out[kHeaderSize - kNonceSize], kNonceSize);
  if ((pwd && RAND_bytes(salt.data(), kSaltSize) != 1) || RAND_bytes(nonce.data(), kNonceSize) != 1)
    throw Error("no random bytes for the archive");
  const StateKey key = derive_key(secret, salt, iterations);
  std::vector<uint8_t> cipher;
  std::array<uint8_t, kTagSize> tag{};
  gcm(true, key, nonce, std::span(out.data(), kHeaderSize), plain, cipher, tag.data());
  OPENSSL_cleanse(plain.data(), plain.size());
  out.insert(out.end(), cipher.begin(), cipher.end());
  out.insert(out.end(), tag.begin(), tag.end());
  return out;
}

StateArchive open_archive(std::span<const uint8_t> in, const ArchiveSecret& secret) {
  if (in.size() < kHeaderSize + kTagSize ||
      std::memcmp(in.data(), kMagic.data(), kMagic.size()) != 0)
    throw Error("not a vtpm-hook export archive");
  if (in.size() > kMaxArchiveSize) throw Error("archive larger than 16 MiB");
  size_t at = kMagic.size();
  const uint16_t format = get_u16(in, at);
  if (format != kArchiveFormat)
    throw Error("archive format " + std::to_string(format) + ": this vtpm-hook reads format " +
                std::to_string(kArchiveFormat));
  at += 2;
  const uint8_t kind = in[at];
  if (kind > 1 || in[at + 1] != 0) throw Error("archive header damaged");
  if (kind != static_cast<uint8_t>(secret.kind))
    throw Error(kind == 0 ? "the archive was sealed with a key file: give --key-file"
                          : "the archive was sealed with a password: give --password-file");
  at += 2;
  const uint32_t iterations = get_u32(in, at);
  at += 4;
  if (kind == 1 && (iterations < kMinIterations || iterations > kMaxIterations))
    throw Error("archive header damaged (PBKDF2 iterations " + std::to_string(iterations) + ")");
  const auto salt = in.subspan(at, kSaltSize), nonce = in.subspan(at + kSaltSize, kNonceSize);
  const StateKey key = derive_key(secret, salt, iterations);
  const auto body = in.subspan(kHeaderSize, in.size() - kHeaderSize - kTagSize);
  std::array<uint8_t, kTagSize> tag{};
  std::copy(in.end() - kTagSize, in.end(), tag.begin());
  std::vector<uint8_t> plain;
  if (!gcm(false, key, nonce, in.first(kHeaderSize), body, plain, tag.data()))
    throw Error("wrong key or damaged archive (its authentication tag does not match)");

  // Authentic from here on: what follows checks this program's own output.
  const auto p = nlohmann::json::from_cbor(plain, true, /*allow_exceptions=*/false);
  OPENSSL_cleanse(plain.data(), plain.size());
  StateArchive a;
  try {
    if (!p.is_object() || p.at("format") != kArchiveFormat) throw Error("bad payload");
    const auto v = parse_tpm_version(p.at("tpmVersion").get<std::string>());
    if (!v) throw Error("bad tpmVersion");
    a.version = *v;
    a.libtpms_version = p.at("libtpmsVersion").get<uint32_t>();
    a.source = p.at("source").get<std::string>();
    a.exported_at = p.at("exportedAt").get<std::string>();
    a.encrypted_at_rest = p.at("encryptedAtRest").get<bool>();
    for (const auto& f : p.at("files"))
      a.files.push_back({f.at("name").get<std::string>(), f.at("data").get_binary()});
  } catch (const nlohmann::json::exception&) {
    throw Error("archive payload damaged");
  } catch (const Error& e) {
    throw Error(std::string("archive payload damaged: ") + e.what());
  }
  const auto allowed = tpm_state_files(a.version);
  bool permall = false;
  for (const auto& f : a.files) {
    if (std::find(allowed.begin(), allowed.end(), f.name) == allowed.end())
      throw Error("the archive carries a file no TPM " + to_string(a.version) + " has: " + f.name);
    permall |= f.name == allowed[0];
  }
  if (!permall) throw Error("the archive carries no permanent state (" + allowed[0] + ")");
  return a;
}

StateArchive read_state_files(int dir_fd, const std::string& name) {
  const bool v2 = exists(dir_fd, state_file_name(TpmVersion::V2, TPM_PERMANENT_ALL_NAME));
  const bool v12 = exists(dir_fd, state_file_name(TpmVersion::V1_2, TPM_PERMANENT_ALL_NAME));
  if (v2 == v12)
    throw Error(v2 ? name + " holds the state of a TPM 2 and of a TPM 1.2"
                   : name + " holds no TPM state (no permanent state file)");
  StateArchive a;
  a.version = v2 ? TpmVersion::V2 : TpmVersion::V1_2;
  const auto names = tpm_state_files(a.version);
  for (const auto& file : names) {
    struct stat st {};
    const std::string what = name + "/" + file;
    UniqueFd fd = open_regular_file(dir_fd, file, what, st);
    if (!fd && errno == ENOENT) continue;
    if (!fd) throw sys_error("open " + what);
    const std::string data = read_all(fd.get(), kMaxArchiveSize, what);
    a.files.push_back({file, std::vector<uint8_t>(data.begin(), data.end())});
    if (file == names[0]) a.encrypted_at_rest = sealed_with_state_key(a.files.back().data, what);
  }
  return a;
}

bool holds_tpm_state(int dir_fd) {
  for (auto v : {TpmVersion::V2, TpmVersion::V1_2})
    for (const auto& file : tpm_state_files(v))
      if (exists(dir_fd, file)) return true;
  return false;
}

void write_state_files(int dir_fd, const std::string& name, const StateArchive& a) {
  struct stat dst {};
  if (::fstat(dir_fd, &dst) != 0) throw sys_error("stat " + name);
  std::vector<std::string> temps;
  auto drop_temps = [&] {
    for (const auto& t : temps) (void)::unlinkat(dir_fd, t.c_str(), 0);
  };
  try {
    for (const auto& f : a.files) {
      const std::string tmp = f.name + ".import";
      const std::string what = name + "/" + tmp;
      (void)::unlinkat(dir_fd, tmp.c_str(), 0);  // a leftover of a killed import
      UniqueFd fd(::openat(dir_fd, tmp.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd) throw sys_error("create " + what);
      temps.push_back(tmp);
      write_all(fd.get(), f.data, what);
      // the emulator runs as the directory's owner (setup hands a root-owned one over)
      if (::fchown(fd.get(), dst.st_uid, dst.st_gid) != 0) throw sys_error("chown " + what);
      if (::fsync(fd.get()) != 0) throw sys_error("fsync " + what);
    }
  } catch (...) {
    drop_temps();
    throw;
  }
  for (size_t i = 0; i < a.files.size(); ++i)
    if (::renameat(dir_fd, temps[i].c_str(), dir_fd, a.files[i].name.c_str()) != 0) {
      const int err = errno;
      drop_temps();
      throw sys_error("rename into " + name + "/" + a.files[i].name, err);
    }
  // What the archive does not carry is not this TPM's: another family's blobs, an old
  // volatile state, certificates of another EK.
  for (auto v : {TpmVersion::V2, TpmVersion::V1_2})
    for (const auto& file : tpm_state_files(v))
      if (std::none_of(a.files.begin(), a.files.end(),
                       [&](const ArchiveFile& f) { return f.name == file; }) &&
          ::unlinkat(dir_fd, file.c_str(), 0) != 0 && errno != ENOENT)
        throw sys_error("remove " + name + "/" + file);
  if (::fsync(dir_fd) != 0) throw sys_error("fsync " + name);
}

}  // namespace vtpm
