#include "oci/oci_state.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "error_matchers.h"

namespace vtpm {
namespace {

using vtpm::testing::error_of;

std::string parse_error(const std::string& json) {
  return error_of([&] { parse_oci_state(json); });
}

TEST(OciState, ParsesRuncCreateRuntimeState) {
  const auto st = parse_oci_state(R"({
    "ociVersion": "1.0.2-dev",
    "id": "web-1",
    "status": "created",
    "pid": 4242,
    "bundle": "/run/containers/web-1/bundle",
    "annotations": {"org.example.tpm": "yes", "io.kubernetes.pod": "p"}
  })");
  EXPECT_EQ(st.id, "web-1");
  EXPECT_EQ(st.status, "created");
  ASSERT_TRUE(st.pid.has_value());
  EXPECT_EQ(*st.pid, 4242);
  EXPECT_EQ(st.bundle, "/run/containers/web-1/bundle");
  ASSERT_EQ(st.annotations.size(), 2u);
  EXPECT_EQ(st.annotations.at("org.example.tpm"), "yes");
  EXPECT_EQ(st.annotations.at("io.kubernetes.pod"), "p");
}

TEST(OciState, ParsesPodmanPoststopStateWithoutPid) {
  const auto st = parse_oci_state(
      R"({"ociVersion":"1.0.0","id":"0123abcdef","status":"stopped","bundle":"/var/lib/containers/b"})");
  EXPECT_EQ(st.id, "0123abcdef");
  EXPECT_EQ(st.status, "stopped");
  EXPECT_FALSE(st.pid.has_value());
  EXPECT_EQ(st.bundle, "/var/lib/containers/b");
  EXPECT_TRUE(st.annotations.empty());
}

// crun (every version) runs poststop hooks with "pid": 0 (do_hooks(def, 0, ...) always writes
// the pid). Teardown must accept it as "no pid". Disabled until parse_oci_state allows it.
TEST(OciState, CrunPoststopPidZeroMeansNoPid) {
  const auto st = parse_oci_state(
      R"({"ociVersion":"1.0","id":"c","pid":0,"root":"/b/rootfs","bundle":"/b","status":"stopped"})");
  EXPECT_FALSE(st.pid.has_value());
  EXPECT_EQ(st.status, "stopped");
}

TEST(OciState, NullPidAndNullAnnotationsAreAbsent) {
  const auto st = parse_oci_state(R"({"id":"c","bundle":"/b","pid":null,"annotations":null})");
  EXPECT_FALSE(st.pid.has_value());
  EXPECT_TRUE(st.annotations.empty());
  EXPECT_EQ(st.status, "");
}

TEST(OciState, EmptyTextIsAnError) {
  const auto msg = parse_error("");
  EXPECT_NE(msg.find("OCI state"), std::string::npos) << msg;
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
}

TEST(OciState, WhitespaceOnlyIsAnError) {
  const auto msg = parse_error(" \n\t\r\n ");
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
}

TEST(OciState, NotJsonIsAnError) {
  const auto msg = parse_error("{\"id\": \"x\",");
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
}

TEST(OciState, JsonArrayIsAnError) {
  const auto msg = parse_error(R"([{"id":"x","bundle":"/b"}])");
  EXPECT_NE(msg.find("not a JSON object"), std::string::npos) << msg;
}

TEST(OciState, MissingIdNamesTheField) {
  const auto msg = parse_error(R"({"bundle":"/b","pid":1})");
  EXPECT_NE(msg.find("\"id\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST(OciState, NonStringIdNamesTheField) {
  const auto msg = parse_error(R"({"id":17,"bundle":"/b"})");
  EXPECT_NE(msg.find("\"id\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a string"), std::string::npos) << msg;
}

TEST(OciState, MissingBundleNamesTheField) {
  const auto msg = parse_error(R"({"id":"c","pid":1})");
  EXPECT_NE(msg.find("\"bundle\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST(OciState, RelativeBundleNamesTheField) {
  const auto msg = parse_error(R"({"id":"c","bundle":"bundles/c"})");
  EXPECT_NE(msg.find("\"bundle\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an absolute path"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bundles/c"), std::string::npos) << msg;
}

TEST(OciState, EmptyBundleNamesTheField) {
  const auto msg = parse_error(R"({"id":"c","bundle":""})");
  EXPECT_NE(msg.find("\"bundle\""), std::string::npos) << msg;
}

TEST(OciState, IdWithSlashNamesTheField) {
  const auto msg = parse_error(R"({"id":"a/b","bundle":"/b"})");
  EXPECT_NE(msg.find("\"id\""), std::string::npos) << msg;
}

TEST(OciState, IdDotDotNamesTheField) {
  const auto msg = parse_error(R"({"id":"..","bundle":"/b"})");
  EXPECT_NE(msg.find("\"id\""), std::string::npos) << msg;
  EXPECT_NE(msg.find(".."), std::string::npos) << msg;
}

TEST(OciState, PidStringNamesTheField) {
  const auto msg = parse_error(R"({"id":"c","bundle":"/b","pid":"123"})");
  EXPECT_NE(msg.find("\"pid\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an integer"), std::string::npos) << msg;
}

TEST(OciState, PidFloatNamesTheField) {
  const auto msg = parse_error(R"({"id":"c","bundle":"/b","pid":12.5})");
  EXPECT_NE(msg.find("\"pid\""), std::string::npos) << msg;
}

TEST(OciState, PidNegativeNamesTheField) {
  const auto msg = parse_error(R"({"id":"c","bundle":"/b","pid":-5})");
  EXPECT_NE(msg.find("\"pid\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("-5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
}

TEST(OciState, PidTooLargeNamesTheField) {
  const auto msg = parse_error(R"({"id":"c","bundle":"/b","pid":99999999999})");
  EXPECT_NE(msg.find("\"pid\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
}

TEST(OciState, AnnotationWithNonStringValueNamesTheField) {
  const auto msg = parse_error(R"({"id":"c","bundle":"/b","annotations":{"ok":"x","n":3}})");
  EXPECT_NE(msg.find("annotations.n"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a string"), std::string::npos) << msg;
}

TEST(OciState, AnnotationsNotAnObjectNamesTheField) {
  const auto msg = parse_error(R"({"id":"c","bundle":"/b","annotations":["a"]})");
  EXPECT_NE(msg.find("\"annotations\""), std::string::npos) << msg;
}

TEST(ValidateContainerId, AcceptsRuncCharacters) {
  EXPECT_NO_THROW(validate_container_id("a"));
  EXPECT_NO_THROW(validate_container_id("my-container_1.2+x"));
  EXPECT_NO_THROW(
      validate_container_id("4f1e2d3c4b5a69788796a5b4c3d2e1f04f1e2d3c4b5a69788796a5b4c3d2e1f0"));
  EXPECT_NO_THROW(validate_container_id("..."));  // not a path component that walks
  EXPECT_NO_THROW(validate_container_id(".hidden"));
  EXPECT_NO_THROW(validate_container_id(std::string(1024, 'x')));
}

TEST(ValidateContainerId, RejectsPathsAndOddCharacters) {
  const std::vector<std::string> bad = {
      "",    ".",    "..",          "a/b", "/abs", "../x", "a b", "a\nb", std::string("a\0b", 3),
      "a:b", "a\\b", "caf\xc3\xa9", "*"};
  for (const std::string& id : bad) {
    const auto msg = error_of([&] { validate_container_id(id); });
    EXPECT_NE(msg.find("\"id\""), std::string::npos) << "id '" << id << "': " << msg;
  }
}

TEST(ValidateContainerId, RejectsOverlongId) {
  const auto msg = error_of([] { validate_container_id(std::string(1025, 'x')); });
  EXPECT_NE(msg.find("1024"), std::string::npos) << msg;
}

}  // namespace
}  // namespace vtpm
