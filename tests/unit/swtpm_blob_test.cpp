#include "state/swtpm_blob.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/tpm_version.h"
#include "state/state_key.h"

namespace vtpm {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes from_hex(const std::string& hex) {
  if (hex.size() % 2 != 0) throw std::invalid_argument("odd hex length");
  Bytes out;
  for (size_t i = 0; i < hex.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// tests/data/swtpm/tpm2-00.permall: written by swtpm 0.7.1 (Debian 12) after tpm2_nvdefine +
// tpm2_nvwrite of NV index 0x1500016, no --key.
const std::string kSwtpmPermallHex =
    "0201000a00000000056a00010000055a0003ab36472300030003c9ea64310001000000780000000100000001"
    "0000000100000001000000010000000100000001000000010000000100000001000000010000000000000000"
    "0000000100000001000000010000000100000001000000010000000100000001000000010000000100000001"
    "0000000100000001000000010000000100000001000000010000000100000001000000010000000100000c00"
    "000000c000000100000000800000008000000001000000010000000100000001000000010000000100000001"
    "000000010000027e000000040000000400000018000000180000001100000000000000050000000300000040"
    "00000003000000030000000300000007000000010000000100000a7800000400000008000000040000000400"
    "0002b2c000000008000000100000004000000040000000060000000c00000001000000080000008000000040"
    "0000020000010001000000010000000100000000000004000000200000000040000000040000000100000000"
    "0000000100000000000000010000000100000000000000010000000000000000000000000000000100000001"
    "0000000100000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000010000000412213443000400"
    "00100010001000000000000000000000000000400acb6416c18f54df95ba64aacc9dbc8437d54c94d0138001"
    "811af8af09f63f4205078107a9606884f221528a7c8334e11747d407d73e36097d9d9f6d2ffcbf680040ee30"
    "6af03c5204ecbbd8372ca73880da5b940480309dd396aca92c3f5ce19bcb6e4e3e5dcea8e03fd83d8996aca0"
    "5e67b9f1441e87d8dc3b5c5fb4a631fd92650040cdbba83e28d3be43177c2bbf7f7444bc376fbe99b5f33c81"
    "93bc3be0a45af9a8c3c36cedff834f6c79e591ea0ad244cd6e0900402d62fba862317fcb006ed0030040a4cb"
    "c2c693e735e7b897909dfa181c367cd0d2ce4228b5055cb30efed67e302640bfe9a0d485c6b07ccee3df8033"
    "aad034e0f27d473c9bd8770fd3c6466dd61f00406e29a24867d0f5680b349dd7f7132f35d3b63a80594ced38"
    "9cc830603fcedbdd68b0d6933598ccd57286db66e6ce1433292321f30a09543badf29bc1a988f40e0040edc7"
    "49bd3ad61699bbfcff8da33a7a2f5c3415621ecc32ec14a5441c2c214ab8e4738e56f557e2e838a8fde688cb"
    "a53b48f31ab461ffeb663a88b5f9bb7694aa0000000000000001000000010100110002176be6260001000100"
    "10000001000000000004000403ffffff000b03ffffff000c03ffffff000d03ffffff000e0020000000000000"
    "0000000000000000000000000003000003e8000003e801ffff000e0000008000000000000000000000000d00"
    "00000000000000000000002019102300163636040000000101002500000004000403ffffff000b03ffffff00"
    "0c03ffffff000d03ffffff010006010101010000000256657887000100000000000000000100026fe83ea100"
    "010000000000000008474252440030e28156ae56b6b4702fcdef32c8bed7b92caeca210053f74928c4e74238"
    "8386620984c82a2566433f8847310f9884cf3400040000000000000000000000000000000001000001001800"
    "000000000000000000000000000000000000000000000001000000025346feab000100000200000000000100"
    "000002094f22c300010000000000029cc0000000b80150001600022547265a000101500016000b2002000200"
    "00002000000100000000002068656c6c6f0affffffffffffffffffffffffffffffffffffffffffffffffffff"
    "000000000000000000000000010000010000ab364723";

// tests/data/swtpm/aes128-binkey.tpm2-00.permall: the same with
// --key file=aes128-binkey.key,mode=aes-cbc,format=binary (flags 0x0001, TLVs 2, 3, 6).
const std::string kSwtpmEncryptedPermallHex =
    "0201000a0001000005ac000200000560120eb51f7bc62c7e74e72bf41bd6a28200489bd5650fdd63ddf7d879"
    "0b848c8463e5f33e477d71798ded23729e5bcb6fcca1825c9be2a5bf953118d3858980ac4b24fae2050ffc79"
    "927264a405199e5434334fcdfd3575509f478161a314ddc63e997ffff13ddcce82e1c843921935252617ac9c"
    "a008905a2a432934bb38b8e5c09a0d040a0a6fc5fdf932b6b05802a8fa20bd57e281b05b5d553d706648f7fe"
    "40ec29a47946721548f37c04fdef17b57dec16820bc101a8ee6dba92451d0411c4436c49742e8b5bdb42339d"
    "0bfd6ff57417fc824ebbf6d0f0679ad13edb7902c0d7d9597dcb390b483710aa075d3ad06e93404009ae27ff"
    "e13bdc5c21847429d35111f90f745767d4b07c84ecdb6800d1af98bdc15620a94792b47c92c4a8a9b71391a3"
    "7c5ffdc8134e5552c2cfbd7136312698464dda207f4d21269d10d566aacad921dcedb9946f9f90b9f8fdc63f"
    "c276ee94775be65d50bda761376158cafd36a403829949de20d68f6ce542f380dfc316ea1fe2812d7f5a2679"
    "dcc770f303702d65f5ef1d08509b1b1e8360d6b7d3747fb4e6588feb4f7081381865b4ac95b565ff60c23b01"
    "e2f3f4fd94e6943d3d43ead31814c5736d9a5e844053e53aca158976bf70232c53d7bbaad869244f8f360e59"
    "6c7f8b9694579da0fb91ddcb47449b6f2d7cb21ede7c0baae595cdd0d37dfec2a45cc17fb70699da4d886a96"
    "188c404a519e6dc647814d4d47c9103ac7b9502fcc57949dbd60ae83ed12c18c52cd6fa89c6b1c607d8be9df"
    "5c3e5ec87163fd03942baf5a4eba54122c1a907be2b7448df29bae2351aaad197c74524b1df0258528db44d5"
    "4ed18a2dfbd75b27a4a175587a152b0eac22590b6091fec4164771df594e1add1907a6dbecd6347eb8abb502"
    "2ec072a1ea7fa1644c133d3db3dea4cc5718fb74cf04fa3bc3f2762e0aa69794e6864e67a3066d9e44fdb3b1"
    "7171ec8540349480527002b67bec49aa7b5236568b3aae38fc7a7e2708ad0b565860439e88e62378fca75cf3"
    "129d7bea8daf62104a8f1e1da43c889ee649575f566839cf49b2c5363e13fc4015a0d72063ba59157502159b"
    "cf0b185e515dad0b4ca17f580c4d0fdb7ac383bbb8a77e0dc88d65dfdf9060f54a08af4960f4314d829414b0"
    "5c13de9a26d9b694b689e546f3d36491b104f6e086dd304f6e10b3a28fdc8b9a646c87e56e363752b80bc135"
    "d2ea2383af3bf9a71534db6c854fcf6e54645b68a079d43bd593c3fa77c1e034af911eca6c30430d615ed9da"
    "43dc459d7291af27cab2d963c2f94302c63a7b45042721625823bf63ce27ec33713b49513a75ef50c22ee54f"
    "dd24dbaaa6aab652b1f617f3f937aca11ae59faddc06a72ae935c36339fa5f2d7b5d139dfb896620ea46b510"
    "04877db4feebe8c5e827281c9a92be47e296c807a0e7e68257d6acd9003d94877e6e6a68d2cc40305e06897c"
    "98b45f94b2f032775653bce14fb394520e9b5c34293bce6686023053342108365c258ef558cd3d3779891222"
    "56c270ba73e4f3449846a0ae236cc6db0dfa71717746447bfffc46d9322759f9f567c41cd0bc0b5bf0c1d655"
    "bc5be0c91602fcc23214ddb713023dc2fb36454c883cfba4abc94fae0f5c8dec39e35da3c4966c5217328632"
    "98f630a35fe61efe54e7af8c3ac159958a26422c6f6af3db089c4adf44ba36992a064a0b7529c92bfbec2b12"
    "9fe586a3ce805484648b3d8406df04d5c2418a10b845f67bd0c91b3895671798bfcba6516a6391e528f498f6"
    "483d24ebd809f3649f6c6f6d8858164c4056e523c050a94a698349260e67b0efd804d077af5fafd066067cee"
    "a5479936fa1c051a3ce06764bbc7827704993aafe4852cee2d75c039995700ea0610a11a1109d982d07e4ec8"
    "48afa536743f64be04a6c1d3dbf30910149f1a7403f21e6e6d9511e00003000000205f9313c5aa6dbe96c0cc"
    "f470a60e06eb5c7d8f6b2b4142dab063ac7711444cf8000600000010b453cbdbcc3d50f4a57a95409ad21a54";

// The libtpms blob inside the real file: everything after the header and the TAG_DATA TLV.
Bytes real_blob() {
  const Bytes f = from_hex(kSwtpmPermallHex);
  return Bytes(f.begin() + 16, f.end());
}

// Asserts that unwrap_state_blob throws vtpm::Error whose message contains `needle`.
void expect_unwrap_error(const Bytes& file, const std::string& needle) {
  try {
    unwrap_state_blob(file);
    FAIL() << "no error, expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void put_u32(Bytes& b, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[off + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

TEST(SwtpmBlob, RealFileHasExpectedHeader) {
  const Bytes f = from_hex(kSwtpmPermallHex);
  ASSERT_EQ(f.size(), 1386u);
  const Bytes header(f.begin(), f.begin() + 16);
  EXPECT_EQ(header, from_hex("0201000a00000000056a00010000055a"));
}

TEST(SwtpmBlob, UnwrapRealSwtpmFile) {
  const Bytes blob = unwrap_state_blob(from_hex(kSwtpmPermallHex));
  ASSERT_EQ(blob.size(), 1370u);
  // libtpms TPM 2 permanent state: u16 version 3, then its magic 0xab364723.
  EXPECT_EQ(Bytes(blob.begin(), blob.begin() + 6), from_hex("0003ab364723"));
}

TEST(SwtpmBlob, WrapIsByteExactWithSwtpm) {
  EXPECT_EQ(wrap_state_blob(real_blob()), from_hex(kSwtpmPermallHex));
}

TEST(SwtpmBlob, RoundTrip) {
  for (size_t n : {0u, 1u, 2u, 15u, 16u, 17u, 4096u, 70000u}) {
    Bytes blob(n);
    for (size_t i = 0; i < n; ++i) blob[i] = static_cast<uint8_t>(i * 7 + 3);
    const Bytes file = wrap_state_blob(blob);
    EXPECT_EQ(file.size(), n + 16);
    EXPECT_EQ(unwrap_state_blob(file), blob) << "size " << n;
  }
}

TEST(SwtpmBlob, EmptyBlobLayout) {
  EXPECT_EQ(wrap_state_blob({}), from_hex("0201000a000000000010000100000000"));
}

TEST(SwtpmBlob, AcceptsHeaderlessLegacyFile) {
  const Bytes blob = real_blob();
  EXPECT_EQ(unwrap_state_blob(blob), blob);
}

TEST(SwtpmBlob, AcceptsVersion1Header) {
  // Version 1: the blob follows the header directly, no TLV.
  const Bytes blob = real_blob();
  Bytes f = from_hex("0101000a000000000000");
  put_u32(f, 6, static_cast<uint32_t>(blob.size() + 10));
  f.insert(f.end(), blob.begin(), blob.end());
  EXPECT_EQ(unwrap_state_blob(f), blob);
}

TEST(SwtpmBlob, SkipsUnknownTlvBeforeData) {
  const Bytes blob = from_hex("00aabbcc");
  Bytes f = from_hex(
      "0201000a000000000000"
      "0063000000020102"
      "000100000004");
  f.insert(f.end(), blob.begin(), blob.end());
  put_u32(f, 6, static_cast<uint32_t>(f.size()));
  EXPECT_EQ(unwrap_state_blob(f), blob);
}

TEST(SwtpmBlob, AcceptsUnencryptedMigrationBlob) {
  // `swtpm_ioctl --save permanent FILE`: flags 0x0004, TAG_MIGRATION_DATA wrapping TAG_DATA.
  const Bytes blob = real_blob();
  const Bytes inner = wrap_state_blob(blob);
  Bytes f = from_hex(
      "0201000a000400000000"
      "000400000000");
  f.insert(f.end(), inner.begin() + 10, inner.end());
  put_u32(f, 6, static_cast<uint32_t>(f.size()));
  put_u32(f, 12, static_cast<uint32_t>(inner.size() - 10));
  EXPECT_EQ(f.size(), 1392u);  // the size of the real file swtpm_ioctl wrote
  EXPECT_EQ(unwrap_state_blob(f), blob);
}

TEST(SwtpmBlob, RejectsEmptyFile) { expect_unwrap_error({}, "empty"); }

TEST(SwtpmBlob, RejectsTruncatedFile) {
  const Bytes f = from_hex(kSwtpmPermallHex);
  for (size_t n : {1u, 5u, 9u, 10u, 15u, 16u, 100u, 1385u})
    expect_unwrap_error(Bytes(f.begin(), f.begin() + n), "truncated");
}

TEST(SwtpmBlob, RejectsTrailingBytes) {
  Bytes f = from_hex(kSwtpmPermallHex);
  f.push_back(0);
  expect_unwrap_error(f, "corrupt");
}

TEST(SwtpmBlob, RejectsTlvOverrunningTheFile) {
  Bytes f = wrap_state_blob(from_hex("00010203"));
  put_u32(f, 12, 5);  // TAG_DATA claims one byte more than there is
  expect_unwrap_error(f, "claims 5 bytes, only 4 follow");
}

TEST(SwtpmBlob, RejectsCutTlvHeader) {
  Bytes f = wrap_state_blob(from_hex("00010203"));
  f.insert(f.end(), {0x00, 0x01, 0x00});
  put_u32(f, 6, static_cast<uint32_t>(f.size()));
  expect_unwrap_error(f, "truncated TLV header at byte 20");
}

TEST(SwtpmBlob, RejectsMissingDataTag) {
  const Bytes f = from_hex(
      "0201000a000000000010"
      "006300000000");
  expect_unwrap_error(f, "no data");
}

TEST(SwtpmBlob, RejectsBadHeaderFields) {
  const Bytes good = wrap_state_blob(from_hex("00010203"));
  Bytes f = good;
  f[0] = 3;  // newer header version
  expect_unwrap_error(f, "version 3");
  f = good;
  f[0] = 0x7f;  // neither a header nor a libtpms blob
  expect_unwrap_error(f, "not a swtpm state file");
  f = good;
  f[1] = 3;  // min_version beyond what swtpm 0.7.1 reads
  expect_unwrap_error(f, "needs blob header version 3");
  f = good;
  f[3] = 12;  // hdrsize
  expect_unwrap_error(f, "header size 12");
}

TEST(SwtpmBlob, RejectsRealEncryptedFile) {
  const Bytes f = from_hex(kSwtpmEncryptedPermallHex);
  ASSERT_EQ(f.size(), 1452u);
  expect_unwrap_error(f, "encrypted");
}

TEST(SwtpmBlob, RejectsEncryptedDataWithoutFlag) {
  const Bytes f = from_hex(
      "0201000a000000000012"
      "00020000000200ff");
  expect_unwrap_error(f, "encrypted");
}

TEST(SwtpmBlob, RejectsMigrationEncryptedFile) {
  const Bytes f = from_hex("0201000a000600000010000500000000");
  expect_unwrap_error(f, "encrypted");
}

TEST(SwtpmBlob, StateFileNames) {
  EXPECT_EQ(state_file_name(TpmVersion::V2, "permall"), "tpm2-00.permall");
  EXPECT_EQ(state_file_name(TpmVersion::V2, "volatilestate"), "tpm2-00.volatilestate");
  EXPECT_EQ(state_file_name(TpmVersion::V2, "savestate"), "tpm2-00.savestate");
  EXPECT_EQ(state_file_name(TpmVersion::V1_2, "permall"), "tpm-00.permall");
  EXPECT_EQ(state_file_name(TpmVersion::V1_2, "volatilestate"), "tpm-00.volatilestate");
  EXPECT_EQ(state_file_name(TpmVersion::V1_2, "savestate"), "tpm-00.savestate");
}

TEST(SwtpmBlob, StateFileNameRejectsPathLikeNames) {
  for (std::string_view bad :
       {std::string_view(""), std::string_view("."), std::string_view(".."),
        std::string_view("../permall"), std::string_view("a/b"), std::string_view("a\0b", 3)})
    EXPECT_THROW(state_file_name(TpmVersion::V2, bad), Error) << bad;
}

// ---- encrypted state (swtpm --key) --------------------------------------------------------------

namespace fs = std::filesystem;
const fs::path kData = fs::path(__FILE__).parent_path().parent_path() / "data" / "swtpm";

Bytes read_data(const std::string& name) {
  std::ifstream in(kData / name, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + (kData / name).string());
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

StateKey key_of(const std::string& key_file) { return StateKey{read_data(key_file)}; }

// Like unwrap_state_blob with a key, asserting an Error mentioning `needle`.
void expect_unwrap_error(const Bytes& file, const StateKey& key, const std::string& needle) {
  try {
    unwrap_state_blob(file, &key);
    FAIL() << "no error, expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// The TLVs after the header: (tag, value) in file order.
std::vector<std::pair<uint16_t, Bytes>> tlvs_of(const Bytes& f) {
  std::vector<std::pair<uint16_t, Bytes>> out;
  for (size_t off = 10; off + 6 <= f.size();) {
    const uint16_t tag = static_cast<uint16_t>(f[off] << 8 | f[off + 1]);
    const size_t len =
        size_t{f[off + 2]} << 24 | size_t{f[off + 3]} << 16 | size_t{f[off + 4]} << 8 | f[off + 5];
    out.emplace_back(tag, Bytes(f.begin() + off + 6, f.begin() + off + 6 + len));
    off += 6 + len;
  }
  return out;
}

// Independent AES-CBC (no padding) and HMAC-SHA256, to build the rarer swtpm layouts.
Bytes aes_cbc_encrypt(const Bytes& key, const Bytes& iv16, const Bytes& in) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(ctx, key.size() == 32 ? EVP_aes_256_cbc() : EVP_aes_128_cbc(), nullptr,
                     key.data(), iv16.data());
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  Bytes out(in.size() + 16);
  int n1 = 0, n2 = 0;
  EVP_EncryptUpdate(ctx, out.data(), &n1, in.data(), static_cast<int>(in.size()));
  EVP_EncryptFinal_ex(ctx, out.data() + n1, &n2);
  EVP_CIPHER_CTX_free(ctx);
  out.resize(static_cast<size_t>(n1 + n2));
  return out;
}

Bytes swtpm_pad(const Bytes& blob, size_t keylen) {
  Bytes p = blob;
  const size_t pad = keylen - blob.size() % keylen;
  p.insert(p.end(), pad, static_cast<uint8_t>(pad));
  return p;
}

Bytes tlv(uint16_t tag, const Bytes& v) {
  Bytes out = {static_cast<uint8_t>(tag >> 8), static_cast<uint8_t>(tag)};
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v.size() >> s));
  out.insert(out.end(), v.begin(), v.end());
  return out;
}

Bytes with_header(uint8_t version, uint16_t flags, const Bytes& body) {
  Bytes f = {version, 1, 0, 10, static_cast<uint8_t>(flags >> 8), static_cast<uint8_t>(flags),
             0,       0, 0, 0};
  f.insert(f.end(), body.begin(), body.end());
  put_u32(f, 6, static_cast<uint32_t>(f.size()));
  return f;
}

struct Capture {
  const char* file;
  const char* key;
  uint16_t flags;
  size_t iv_size;
};
const Capture kCaptures[] = {
    {"aes128-binkey.tpm2-00.permall", "aes128-binkey.key", 0x0001, 16},
    {"aes256-binkey.tpm2-00.permall", "aes256-binkey.key", 0x0009, 32},
};

TEST(SwtpmBlobEncrypted, DecryptsRealSwtpmCaptures) {
  for (const auto& c : kCaptures) {
    const StateKey key = key_of(c.key);
    const Bytes blob = unwrap_state_blob(read_data(c.file), &key);
    ASSERT_EQ(blob.size(), 1370u) << c.file;
    EXPECT_EQ(Bytes(blob.begin(), blob.begin() + 6), from_hex("0003ab364723")) << c.file;
    const std::string text(blob.begin(), blob.end());
    EXPECT_NE(text.find("hello\n"), std::string::npos) << c.file << ": NV data not found";
  }
}

TEST(SwtpmBlobEncrypted, DecryptsCaptureWrittenWithPasswordKey) {
  const StateKey key = derive_key_from_password_file((kData / "pbkdf2-pwd.txt").string(), 128);
  const Bytes blob = unwrap_state_blob(read_data("pbkdf2-pwd.tpm2-00.permall"), &key);
  const std::string text(blob.begin(), blob.end());
  EXPECT_NE(text.find("hello\n"), std::string::npos);
}

TEST(SwtpmBlobEncrypted, WrapIsByteExactWithSwtpmGivenItsIv) {
  for (const auto& c : kCaptures) {
    const Bytes file = read_data(c.file);
    const StateKey key = key_of(c.key);
    const auto t = tlvs_of(file);
    ASSERT_EQ(t.size(), 3u);
    ASSERT_EQ(t[2].first, 6);
    EXPECT_EQ(t[2].second.size(), c.iv_size);
    const Bytes blob = unwrap_state_blob(file, &key);
    EXPECT_EQ(detail::wrap_encrypted_state_blob(blob, key, t[2].second), file) << c.file;
  }
}

TEST(SwtpmBlobEncrypted, LayoutFlagsAndFreshIv) {
  for (size_t keylen : {16u, 32u}) {
    const StateKey key{Bytes(keylen, 0x5a)};
    const Bytes blob = real_blob();
    const Bytes a = wrap_state_blob(blob, &key);
    const Bytes b = wrap_state_blob(blob, &key);
    EXPECT_EQ(Bytes(a.begin(), a.begin() + 6),
              from_hex(keylen == 32 ? "0201000a0009" : "0201000a0001"));
    const auto t = tlvs_of(a);
    ASSERT_EQ(t.size(), 3u);
    EXPECT_EQ(t[0].first, 2);
    EXPECT_EQ(t[0].second.size(), 1376u);
    EXPECT_EQ(t[1].first, 3);
    EXPECT_EQ(t[1].second.size(), 32u);
    EXPECT_EQ(t[2].first, 6);
    EXPECT_EQ(t[2].second.size(), keylen);
    EXPECT_NE(a, b) << "the IV must be fresh per write";
    EXPECT_NE(tlvs_of(b)[2].second, t[2].second);
  }
}

TEST(SwtpmBlobEncrypted, PadsToAMultipleOfTheKeySizeLikeSwtpm) {
  // swtpm 0.7.1 pads to a multiple of the key length, not of the AES block (observed: a
  // 1446-byte blob with a 32-byte key has 26 pad bytes of value 26).
  const StateKey key{Bytes(32, 0x11)};
  for (auto [n, want] : {std::pair<size_t, size_t>{1446, 1472},
                         {1392, 1408},
                         {1376, 1408},
                         {0, 32},
                         {31, 32},
                         {32, 64}}) {
    const Bytes f = wrap_state_blob(Bytes(n, 0x00), &key);
    EXPECT_EQ(tlvs_of(f)[0].second.size(), want) << n;
  }
  const StateKey key128{Bytes(16, 0x11)};
  EXPECT_EQ(tlvs_of(wrap_state_blob(Bytes(1376, 0), &key128))[0].second.size(), 1392u);
}

TEST(SwtpmBlobEncrypted, RoundTrip) {
  for (size_t keylen : {16u, 32u}) {
    const StateKey key{Bytes(keylen, 0x42)};
    for (size_t n : {0u, 1u, 15u, 16u, 17u, 31u, 32u, 33u, 4096u, 70000u}) {
      Bytes blob(n);
      for (size_t i = 0; i < n; ++i) blob[i] = static_cast<uint8_t>(i * 13 + 1);
      EXPECT_EQ(unwrap_state_blob(wrap_state_blob(blob, &key), &key), blob)
          << "key " << keylen << " size " << n;
    }
  }
}

TEST(SwtpmBlobEncrypted, EncryptedFileWithoutKeyNeedsAKey) {
  for (const auto& c : kCaptures)
    expect_unwrap_error(read_data(c.file), "state is encrypted; a key is needed");
  const StateKey key{Bytes(16, 1)};
  expect_unwrap_error(wrap_state_blob(from_hex("0001"), &key),
                      "state is encrypted; a key is needed");
}

TEST(SwtpmBlobEncrypted, WrongKeyIsDetectedByTheHmac) {
  StateKey wrong = key_of("aes128-binkey.key");
  wrong.bytes[0] ^= 1;
  expect_unwrap_error(read_data("aes128-binkey.tpm2-00.permall"), wrong,
                      "wrong key or corrupt state");
  wrong = key_of("aes256-binkey.key");
  wrong.bytes[31] ^= 0x80;
  expect_unwrap_error(read_data("aes256-binkey.tpm2-00.permall"), wrong,
                      "wrong key or corrupt state");
}

TEST(SwtpmBlobEncrypted, KeyOfTheOtherSizeIsAWrongKey) {
  const StateKey k128 = key_of("aes128-binkey.key");
  const StateKey k256 = key_of("aes256-binkey.key");
  expect_unwrap_error(read_data("aes256-binkey.tpm2-00.permall"), k128,
                      "wrong key: the state was written with a 256-bit key");
  expect_unwrap_error(read_data("aes128-binkey.tpm2-00.permall"), k256,
                      "wrong key: the state was written with a 128-bit key");
}

TEST(SwtpmBlobEncrypted, TamperingIsDetected) {
  const StateKey key = key_of("aes128-binkey.key");
  const Bytes good = read_data("aes128-binkey.tpm2-00.permall");
  for (size_t at : {16u, 100u, 1391u, 1400u, 1450u}) {  // ciphertext, HMAC, IV
    Bytes f = good;
    f[at] ^= 0x01;
    expect_unwrap_error(f, key, "wrong key or corrupt state");
  }
  Bytes cut = good;
  cut.pop_back();
  expect_unwrap_error(cut, key, "truncated");
}

TEST(SwtpmBlobEncrypted, UnencryptedFileWithAKeyIsRefusedLikeSwtpm) {
  const StateKey key{Bytes(32, 7)};
  expect_unwrap_error(from_hex(kSwtpmPermallHex), key, "not encrypted, but a key was given");
  expect_unwrap_error(wrap_state_blob(from_hex("00010203")), key, "not encrypted");
}

TEST(SwtpmBlobEncrypted, KeysMustBe16Or32Bytes) {
  const StateKey bad{Bytes(24, 1)};
  EXPECT_THROW(wrap_state_blob(from_hex("0001"), &bad), Error);
  EXPECT_THROW(unwrap_state_blob(from_hex(kSwtpmEncryptedPermallHex), &bad), Error);
  const StateKey key{Bytes(16, 1)};
  EXPECT_THROW(detail::wrap_encrypted_state_blob(from_hex("0001"), key, Bytes(32, 0)), Error);
}

TEST(SwtpmBlobEncrypted, FileWithoutIvUsesZeroIvAndMacsCiphertextOnly) {
  // What swtpm writes when it cannot get random bytes (from its source).
  const Bytes k(16, 0x33);
  const Bytes blob = from_hex("0003abcdef");
  const Bytes ct = aes_cbc_encrypt(k, Bytes(16, 0), swtpm_pad(blob, 16));
  Bytes mac(32);
  unsigned int len = 0;
  HMAC(EVP_sha256(), k.data(), 16, ct.data(), ct.size(), mac.data(), &len);
  Bytes body = tlv(2, ct);
  const Bytes m = tlv(3, mac);
  body.insert(body.end(), m.begin(), m.end());
  const StateKey key{k};
  EXPECT_EQ(unwrap_state_blob(with_header(2, 0x0001, body), &key), blob);
}

TEST(SwtpmBlobEncrypted, Version1AndHeaderlessEncryptedFiles) {
  // swtpm's older format: AES-CBC with a zero IV of SHA256(blob) || blob, no TLVs.
  const Bytes k(32, 0x44);
  const Bytes blob = real_blob();
  Bytes plain(32);
  unsigned int len = 0;
  EVP_Digest(blob.data(), blob.size(), plain.data(), &len, EVP_sha256(), nullptr);
  plain.insert(plain.end(), blob.begin(), blob.end());
  const Bytes enc = aes_cbc_encrypt(k, Bytes(16, 0), swtpm_pad(plain, 32));
  const StateKey key{k};
  EXPECT_EQ(unwrap_state_blob(with_header(1, 0x0001, enc), &key), blob);
  // Without a header (this ciphertext does not start with 1 or 2, which would look like one).
  ASSERT_NE(enc[0], 1);
  ASSERT_NE(enc[0], 2);
  EXPECT_EQ(unwrap_state_blob(enc, &key), blob);
  StateKey wrong = key;
  wrong.bytes[0] ^= 1;
  expect_unwrap_error(with_header(1, 0x0001, enc), wrong, "wrong key or corrupt state");
  expect_unwrap_error(enc, wrong, "wrong key or corrupt state");
  // A header-less unencrypted file cannot be read with a key (swtpm cannot either).
  expect_unwrap_error(blob, key, "wrong key or corrupt state");
}

}  // namespace
}  // namespace vtpm
