#include "tpm/tpm_proto.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace vtpm::proto {
namespace {

using Bytes = std::vector<uint8_t>;

TEST(TpmProto, ParseHeaderReadsBigEndianFields) {
  const Bytes b = {0x80, 0x02, 0x00, 0x00, 0x01, 0x23, 0x20, 0x00, 0x10, 0x00, 0xaa};
  const auto h = parse_header(b);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->tag, 0x8002);
  EXPECT_EQ(h->size, 0x123u);
  EXPECT_EQ(h->code, 0x20001000u);
}

TEST(TpmProto, ParseHeaderOfExactlyTenBytes) {
  const Bytes b = {0x00, 0xc4, 0xff, 0xee, 0xdd, 0xcc, 0x01, 0x02, 0x03, 0x04};
  const auto h = parse_header(b);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->tag, 0x00c4);
  EXPECT_EQ(h->size, 0xffeeddccu);
  EXPECT_EQ(h->code, 0x01020304u);
}

TEST(TpmProto, ParseHeaderNeedsTenBytes) {
  EXPECT_FALSE(parse_header(Bytes{}).has_value());
  EXPECT_FALSE(parse_header(Bytes(9, 0x80)).has_value());
}

TEST(TpmProto, PutAndGetRoundTrip) {
  Bytes out;
  put_u16(out, 0xbeef);
  put_u32(out, 0xdeadc0de);
  EXPECT_EQ(out, (Bytes{0xbe, 0xef, 0xde, 0xad, 0xc0, 0xde}));
  EXPECT_EQ(get_u16(out, 0), 0xbeef);
  EXPECT_EQ(get_u32(out, 2), 0xdeadc0deu);
  EXPECT_EQ(get_u16(out, 1), 0xefde);
}

TEST(TpmProto, MakeResponseTpm2) {
  EXPECT_EQ(make_response(TpmVersion::V2, kTpm2RcCommandSize),
            (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x42}));
  EXPECT_EQ(make_response(TpmVersion::V2, 0),
            (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00}));
}

TEST(TpmProto, MakeResponseTpm12) {
  EXPECT_EQ(make_response(TpmVersion::V1_2, kTpm12BadParamSize),
            (Bytes{0x00, 0xc4, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x19}));
}

TEST(TpmProto, Tpm2StartupClear) {
  EXPECT_EQ(startup_command(TpmVersion::V2, true),
            (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x44, 0x00, 0x00}));
}

TEST(TpmProto, Tpm2StartupState) {
  EXPECT_EQ(startup_command(TpmVersion::V2, false),
            (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x44, 0x00, 0x01}));
}

TEST(TpmProto, Tpm2ShutdownState) {
  EXPECT_EQ(shutdown_state_command(TpmVersion::V2),
            (Bytes{0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x45, 0x00, 0x01}));
}

TEST(TpmProto, Tpm12StartupClearAndState) {
  // TPM_ORD_Startup = 0x99, TPM_ST_CLEAR = 1, TPM_ST_STATE = 2.
  EXPECT_EQ(startup_command(TpmVersion::V1_2, true),
            (Bytes{0x00, 0xc1, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x99, 0x00, 0x01}));
  EXPECT_EQ(startup_command(TpmVersion::V1_2, false),
            (Bytes{0x00, 0xc1, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x99, 0x00, 0x02}));
}

TEST(TpmProto, Tpm12SaveState) {
  EXPECT_EQ(shutdown_state_command(TpmVersion::V1_2),
            (Bytes{0x00, 0xc1, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x98}));
}

TEST(TpmProto, CommandsHaveConsistentSizeFields) {
  for (const auto& c :
       {startup_command(TpmVersion::V2, true), startup_command(TpmVersion::V1_2, false),
        shutdown_state_command(TpmVersion::V2), shutdown_state_command(TpmVersion::V1_2)}) {
    const auto h = parse_header(c);
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(h->size, c.size());
  }
}

}  // namespace
}  // namespace vtpm::proto
