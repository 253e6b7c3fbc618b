#include "tpm/ca_signer.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <tss2/tss2_tpm2_types.h>
#include <unistd.h>

#include <cstring>

#include "common/big_endian.h"
#include "common/error.h"
#include "common/process_util.h"

namespace vtpm {
namespace {

constexpr size_t kRsaBytes = 2048 / 8;
constexpr size_t kEccCoordBytes = 256 / 8;
constexpr size_t kMaxRequest = 2 + kRsaBytes;
// An EK certificate lives in one NV index: libtpms's MAX_NV_INDEX_SIZE (2048) bounds it.
constexpr size_t kMaxCertificate = 2048;
// Answers: kOk and the DER certificate (empty: "ready"), or kFailed and the reason.
constexpr uint8_t kOk = 0, kFailed = 1;

// One SOCK_SEQPACKET message, at most max bytes (a longer one reads as max + 1); empty at EOF
// (ECONNRESET too: the other end exited with a message of ours unread).
std::vector<uint8_t> receive(int sock, size_t max, const char* what) {
  std::vector<uint8_t> buf(max + 1);
  for (;;) {
    const ssize_t r = ::read(sock, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == ECONNRESET) return {};
    if (r < 0) throw sys_error(std::string("read from the ") + what);
    buf.resize(static_cast<size_t>(r));
    return buf;
  }
}

// write(), not send(): the emulator's seccomp filter, which confines both ends, has no send().
void send_answer(int sock, uint8_t status, std::span<const uint8_t> body, const char* what) {
  std::vector<uint8_t> msg{status};
  msg.insert(msg.end(), body.begin(), body.end());
  const ssize_t w = ::write(sock, msg.data(), msg.size());
  if (w < 0) throw sys_error(std::string("write to the ") + what);
  if (static_cast<size_t>(w) != msg.size()) throw Error(std::string("short write to the ") + what);
}

void send_error(int sock, const std::string& why) {
  send_answer(sock, kFailed, std::span(reinterpret_cast<const uint8_t*>(why.data()), why.size()),
              "CA signer's client");
}

// The part of a TPM2B that TPMs may trim (leading zeros), padded back to its fixed size.
std::vector<uint8_t> fixed(const std::vector<uint8_t>& v, size_t n, const char* what) {
  if (v.size() > n) throw Error(std::string("EK ") + what + " is longer than " + std::to_string(n));
  std::vector<uint8_t> out(n - v.size(), 0);
  out.insert(out.end(), v.begin(), v.end());
  return out;
}

}  // namespace

std::vector<uint8_t> encode_sign_request(const EkPublic& ek) {
  std::vector<uint8_t> msg;
  proto::put_u16(msg, ek.rsa ? TPM2_ALG_RSA : TPM2_ALG_ECC);
  if (ek.rsa) {
    const auto n = fixed(ek.modulus, kRsaBytes, "RSA modulus");
    msg.insert(msg.end(), n.begin(), n.end());
  } else {
    for (const auto* c : {&ek.x, &ek.y}) {
      const auto v = fixed(*c, kEccCoordBytes, "ECC coordinate");
      msg.insert(msg.end(), v.begin(), v.end());
    }
  }
  return msg;
}

EkPublic decode_sign_request(std::span<const uint8_t> msg) {
  if (msg.size() < 2) throw Error("CA signer: request of " + std::to_string(msg.size()) + " bytes");
  const uint16_t alg = proto::get_u16(msg, 0);
  const auto key = msg.subspan(2);
  EkPublic ek;
  if (alg == TPM2_ALG_RSA) {
    if (key.size() != kRsaBytes)
      throw Error("CA signer: RSA request with " + std::to_string(key.size()) +
                  " bytes of modulus, not " + std::to_string(kRsaBytes));
    if (!(key[0] & 0x80)) throw Error("CA signer: RSA modulus shorter than 2048 bits");
    ek.modulus.assign(key.begin(), key.end());
  } else if (alg == TPM2_ALG_ECC) {
    if (key.size() != 2 * kEccCoordBytes)
      throw Error("CA signer: ECC request with " + std::to_string(key.size()) +
                  " bytes of point, not " + std::to_string(2 * kEccCoordBytes));
    ek.rsa = false;
    ek.x.assign(key.begin(), key.begin() + kEccCoordBytes);
    ek.y.assign(key.begin() + kEccCoordBytes, key.end());
  } else {
    throw Error(fmt::format("CA signer: request for key type {:#06x}, neither RSA nor ECC", alg));
  }
  // OpenSSL's own check: an odd modulus without small factors, a point on the curve.
  const std::string invalid =
      std::string("CA signer: not a valid ") + (ek.rsa ? "RSA" : "ECC") + " public key";
  const PkeyPtr pub = with_context(invalid, [&] { return ek_public_key(ek); });
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_from_pkey(nullptr, pub.get(), nullptr), EVP_PKEY_CTX_free);
  if (!ctx || EVP_PKEY_public_check(ctx.get()) != 1) throw Error(invalid);
  return ek;
}

void serve_ca_signer(int sock, const LocalCa& ca, const std::string& subject) {
  bool signed_rsa = false, signed_ecc = false;
  for (;;) {
    const auto req = receive(sock, kMaxRequest, "CA signer's client");
    if (req.empty()) return;  // EOF: the client is done
    std::vector<uint8_t> der;
    try {
      const EkPublic ek = decode_sign_request(req);
      bool& done = ek.rsa ? signed_rsa : signed_ecc;
      if (done)
        throw Error(std::string("CA signer: a second ") + (ek.rsa ? "RSA" : "ECC") +
                    " certificate asked for");
      done = true;
      der = make_ek_certificate(ek, ca, subject);
      if (der.size() > kMaxCertificate) throw Error("CA signer: certificate over its bound");
    } catch (const std::exception& e) {
      send_error(sock, e.what());
      return;
    }
    send_answer(sock, kOk, der, "CA signer's client");
  }
}

std::vector<uint8_t> request_ek_certificate(int sock, const EkPublic& ek) {
  const auto req = encode_sign_request(ek);
  const ssize_t w = ::write(sock, req.data(), req.size());
  if (w < 0 && errno == EPIPE) throw Error("the CA signer closed the connection");
  if (w < 0) throw sys_error("send an EK to the CA signer");
  if (static_cast<size_t>(w) != req.size()) throw Error("short write to the CA signer");
  auto ans = receive(sock, 1 + kMaxCertificate, "CA signer");
  if (ans.empty()) throw Error("the CA signer closed the connection");
  if (ans[0] != kOk) throw Error(std::string(ans.begin() + 1, ans.end()));
  if (ans.size() == 1 || ans.size() > 1 + kMaxCertificate)
    throw Error("the CA signer answered " + std::to_string(ans.size()) + " bytes");
  return {ans.begin() + 1, ans.end()};
}

CaSigner CaSigner::start(const std::string& key_file, const std::string& cert_file,
                         std::string subject, const std::function<void()>& confine) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    throw sys_error("socketpair");
  UniqueFd ours(sv[0]), theirs(sv[1]);
  spdlog::default_logger()->flush();
  const pid_t pid = ::fork();
  if (pid < 0) throw sys_error("fork the CA signer");
  if (pid == 0) {
    // Nothing of the hook's: no logger (its fd goes), no state dir, no stdio. The socket
    // becomes fd 3, every other fd is closed.
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("ca-signer"));
    (void)::signal(SIGPIPE, SIG_IGN);  // a client gone is EPIPE, then EOF: the signer ends
    // (Above stdio first: a hook started with a closed stdio fd may have the socket there.)
    const int moved = ::fcntl(theirs.get(), F_DUPFD, 3);
    const int null_fd = ::open("/dev/null", O_RDWR);
    if (moved < 0 || null_fd < 0) ::_exit(127);
    for (int fd = 0; fd <= 2; ++fd) (void)::dup2(null_fd, fd);
    if ((moved != 3 && ::dup2(moved, 3) != 3) || ::close_range(4, ~0U, 0) != 0) ::_exit(127);
    (void)theirs.release();  // its fd was closed or replaced above
    const int sock = 3;
    try {
      const LocalCa ca = load_or_create_ca(key_file, cert_file);
      confine();
      send_answer(sock, kOk, {}, "hook");
      serve_ca_signer(sock, ca, subject);
    } catch (const std::exception& e) {
      try {
        send_error(sock, e.what());
      } catch (const std::exception&) {
        // nobody listens
      }
      ::_exit(1);
    }
    ::_exit(0);
  }
  theirs.reset();
  CaSigner signer(pid, std::move(ours));
  const auto ans = receive(signer.fd(), 1 + kMaxCertificate, "CA signer");
  if (ans.empty()) throw Error("the CA signer died while starting");
  if (ans[0] != kOk || ans.size() != 1)
    throw Error(ans[0] == kFailed ? std::string(ans.begin() + 1, ans.end())
                                  : "the CA signer's first answer is not \"ready\"");
  return signer;
}

CaSigner::~CaSigner() {
  if (pid_ <= 0) return;
  sock_.reset();  // EOF: the signer returns and exits
  try {
    const UniqueFd pidfd = open_pidfd(pid_);
    if (!wait_pidfd(pidfd.get(), std::chrono::seconds(10)))
      (void)::pidfd_send_signal(pidfd.get(), SIGKILL, nullptr, 0);
  } catch (const std::exception&) {
    (void)::kill(pid_, SIGKILL);  // no pidfd or no poll: our unreaped child, the pid is its
  }
  (void)::waitpid(pid_, nullptr, 0);  // our child: reaped whatever its status
}

}  // namespace vtpm
