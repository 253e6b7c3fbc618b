#pragma once
// The local CA's signer: the only process that ever holds the CA's private key. It is forked
// from one that never loaded the key, loads it, confines itself, and then answers requests of a
// fixed format (an EK's public key) on a socket with DER certificates. The process that runs
// libtpms to make the EKs holds only the other end of that socket.
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "tpm/local_ca.h"

namespace vtpm {

// A request is TPM_ALG_ID (big-endian u16) and the key, nothing else: TPM2_ALG_RSA and the
// RSA-2048 modulus (256 bytes, exponent 65537), or TPM2_ALG_ECC and the P-256 point, x then y
// (32 bytes each). Throws Error for any other key.
std::vector<uint8_t> encode_sign_request(const EkPublic& ek);
// The signer's side: anything but exactly that shape, or a key OpenSSL finds invalid, is an
// Error.
EkPublic decode_sign_request(std::span<const uint8_t> msg);

// Answers requests on sock until the other end closes it: one certificate per key type, whose
// subject is `subject`; the first bad request is answered with an error and ends the session.
void serve_ca_signer(int sock, const LocalCa& ca, const std::string& subject);

// The client's side: one request, the DER certificate back, or an Error with the signer's reason.
std::vector<uint8_t> request_ek_certificate(int sock, const EkPublic& ek);

// A running signer. The destructor closes its socket (the signer then exits) and reaps it.
class CaSigner {
 public:
  // Forks the signer: it keeps no fd but its socket (stdio goes to /dev/null), loads (or
  // creates, see load_or_create_ca) the CA, runs `confine`, and says it is ready. Returns once
  // it is; its failure to load or confine is an Error here.
  static CaSigner start(const std::string& key_file, const std::string& cert_file,
                        std::string subject, const std::function<void()>& confine);
  CaSigner(CaSigner&& o) noexcept : pid_(std::exchange(o.pid_, 0)), sock_(std::move(o.sock_)) {}
  CaSigner& operator=(CaSigner&&) = delete;
  ~CaSigner();

  // The only fd of the signer's that the process sending requests inherits (no pidfd is kept).
  int fd() const { return sock_.get(); }
  pid_t pid() const { return pid_; }

 private:
  CaSigner(pid_t pid, UniqueFd sock) : pid_(pid), sock_(std::move(sock)) {}
  pid_t pid_ = 0;  // our child, unreaped: its pid cannot be reused
  UniqueFd sock_;
};

}  // namespace vtpm
