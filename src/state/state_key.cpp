#include "state/state_key.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstddef>

#include "common/error.h"
#include "common/io_util.h"

namespace vtpm {
namespace {

// Bytes that are wiped when they go out of scope (key material read from files).
struct SecretBuffer {
  std::vector<uint8_t> data;
  SecretBuffer() = default;
  SecretBuffer(const SecretBuffer&) = delete;
  SecretBuffer& operator=(const SecretBuffer&) = delete;
  ~SecretBuffer() {
    if (!data.empty()) OPENSSL_cleanse(data.data(), data.size());
  }
};

// Reads all of `path` (at most max_size bytes; more is an error).
void read_secret_file(const std::string& path, const std::string& what, size_t max_size,
                      const SecretFileRules& rules, SecretBuffer& out) {
  UniqueFd fd = open_secret_file(path, what, max_size, rules);
  out.data.resize(max_size + 1);
  size_t have = 0;
  while (have < out.data.size()) {
    const ssize_t r = ::read(fd.get(), out.data.data() + have, out.data.size() - have);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw sys_error("cannot read " + what + " " + path);
    if (r == 0) break;
    have += static_cast<size_t>(r);
  }
  if (have > max_size)
    throw Error(what + " " + path + " is too large (more than " + std::to_string(max_size) +
                " bytes)");
  OPENSSL_cleanse(out.data.data() + have, out.data.size() - have);
  out.data.resize(have);
}

size_t key_bytes_for(int bits) {
  if (bits != 128 && bits != 256)
    throw Error("unsupported state key size of " + std::to_string(bits) +
                " bits (AES-128 or AES-256 only)");
  return static_cast<size_t>(bits) / 8;
}

int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

StateKey::~StateKey() {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

UniqueFd open_secret_file(const std::string& path, const std::string& what, size_t max_size,
                          const SecretFileRules& rules) {
  struct stat st {};
  UniqueFd dir;
  std::string name = path;
  if (rules.no_symlinks) {
    // The directory without following any link on the way (RESOLVE_NO_SYMLINKS), then the
    // file in it with O_NOFOLLOW: the file opened is the one the path names, so the lexical
    // checks made on the path hold for it.
    const auto slash = path.rfind('/');
    if (slash == std::string::npos) throw Error(what + " " + path + " is not an absolute path");
    const std::string parent = slash == 0 ? "/" : path.substr(0, slash);
    name = path.substr(slash + 1);
    dir = open_resolved(AT_FDCWD, parent, O_PATH | O_DIRECTORY, RESOLVE_NO_SYMLINKS);
    if (!dir) throw sys_error("cannot open " + what + " " + path + ": directory " + parent);
  }
  UniqueFd fd = open_regular_file(dir ? dir.get() : AT_FDCWD, name, what + " " + path, st);
  if (!fd) throw sys_error("cannot open " + what + " " + path);
  if (!rules.owners.empty()) {
    bool ok = false;
    std::string names;
    for (uid_t u : rules.owners) {
      ok |= st.st_uid == u;
      names += (names.empty() ? "uid " : " or ") + std::to_string(u);
    }
    if (!ok)
      throw Error(what + " " + path + " belongs to uid " + std::to_string(st.st_uid) + ", not to " +
                  names);
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    throw Error(what + " " + path + " is writable by group or others");
  if (static_cast<size_t>(st.st_size) > max_size)
    throw Error(what + " " + path + " is too large (more than " + std::to_string(max_size) +
                " bytes)");
  return fd;
}

StateKey load_key_file(const std::string& path, const std::string& format, int bits,
                       const SecretFileRules& rules) {
  const size_t want = key_bytes_for(bits);
  const std::string what = "state key file";
  StateKey key;
  if (format == "binary") {
    SecretBuffer buf;
    read_secret_file(path, what, kMaxKeyFileSize, rules, buf);
    if (buf.data.size() != want)
      throw Error(what + " " + path + " has " + std::to_string(buf.data.size()) +
                  " bytes; a binary AES-" + std::to_string(bits) + " key has exactly " +
                  std::to_string(want));
    key.bytes = buf.data;
    return key;
  }
  if (format != "hex")
    throw Error("unknown key file format '" + format + "' for " + path +
                " (expected binary or hex)");

  SecretBuffer buf;
  read_secret_file(path, what, kMaxKeyFileSize, rules, buf);
  const std::vector<uint8_t>& d = buf.data;
  size_t i = 0;
  if (d.size() >= 2 && d[0] == '0' && (d[1] == 'x' || d[1] == 'X')) i = 2;
  const size_t digits_begin = i;
  while (i < d.size() && !std::isspace(d[i])) {
    if (hex_value(d[i]) < 0)
      throw Error(what + " " + path + " is not a hex key: invalid character at byte " +
                  std::to_string(i));
    ++i;
  }
  const size_t digits = i - digits_begin;
  for (; i < d.size(); ++i)
    if (!std::isspace(d[i]))
      throw Error(what + " " + path + " is not a hex key: more text after the hex digits");
  if (digits != want * 2)
    throw Error(what + " " + path + " has " + std::to_string(digits) + " hex digits; an AES-" +
                std::to_string(bits) + " key has exactly " + std::to_string(want * 2));
  key.bytes.resize(want);
  for (size_t k = 0; k < want; ++k)
    key.bytes[k] = static_cast<uint8_t>(hex_value(d[digits_begin + 2 * k]) * 16 +
                                        hex_value(d[digits_begin + 2 * k + 1]));
  return key;
}

StateKey derive_key_from_password_file(const std::string& path, int bits, const std::string& kdf,
                                       const SecretFileRules& rules) {
  const size_t want = key_bytes_for(bits);
  if (kdf != "pbkdf2" && kdf != "sha512")
    throw Error("unknown key derivation '" + kdf + "' for password file " + path +
                " (expected pbkdf2 or sha512)");
  SecretBuffer pwd;
  read_secret_file(path, "password file", kMaxPasswordFileSize, rules, pwd);
  if (pwd.data.empty()) throw Error("password file " + path + " is empty");

  StateKey key;
  key.bytes.resize(want);
  if (kdf == "pbkdf2") {
    // swtpm: PKCS5_PBKDF2_HMAC(password, salt "swtpm", 1000 iterations, SHA-512, key size).
    static constexpr unsigned char kSalt[] = {'s', 'w', 't', 'p', 'm'};
    if (PKCS5_PBKDF2_HMAC(reinterpret_cast<const char*>(pwd.data.data()),
                          static_cast<int>(pwd.data.size()), kSalt, sizeof kSalt, 1000,
                          EVP_sha512(), static_cast<int>(want), key.bytes.data()) != 1)
      throw Error("PBKDF2 key derivation from " + path + " failed");
  } else {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (EVP_Digest(pwd.data.data(), pwd.data.size(), md, &md_len, EVP_sha512(), nullptr) != 1 ||
        md_len < want)
      throw Error("SHA-512 of password file " + path + " failed");
    key.bytes.assign(md, md + want);
    OPENSSL_cleanse(md, sizeof md);
  }
  return key;
}

StateKey read_password_file(const std::string& path, const SecretFileRules& rules) {
  SecretBuffer pwd;
  read_secret_file(path, "password file", kMaxPasswordFileSize, rules, pwd);
  if (pwd.data.empty()) throw Error("password file " + path + " is empty");
  StateKey out;
  out.bytes.swap(pwd.data);
  return out;
}

}  // namespace vtpm
