// LD_PRELOAD shim for the self-test tests: OpenSSL's SHA256_Final (which libtpms calls for
// SHA-256), with one bit of every digest flipped. libtpms' SHA-256 known-answer test must catch
// it and put the TPM into failure mode before any command is answered with a SHA-256 result.
#include <dlfcn.h>

extern "C" int SHA256_Final(unsigned char* md, void* ctx) {
  using Fn = int (*)(unsigned char*, void*);
  static const Fn real = reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, "SHA256_Final"));
  const int r = real ? real(md, ctx) : 0;
  md[0] ^= 1;
  return r;
}
