// The content of a measured launch: RFC 8785 bytes, the projection of config.json, the image
// event, the CEL log and its replay. Vectors in tests/unit/data/measure are shared with the
// independent python verifier (tests/e2e/verify_measurements.py --self-test).
#include "oci/measurement.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <bit>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/io_util.h"
#include "common/pcr_banks.h"
#include "error_matchers.h"
#include "oci/json_util.h"

namespace vtpm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using vtpm::testing::expect_error;

const fs::path kData = fs::path(__FILE__).parent_path() / "data" / "measure";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  EXPECT_TRUE(in) << p;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string hex(const std::vector<uint8_t>& b) {
  std::string out;
  for (const uint8_t c : b) {
    static constexpr char kHex[] = "0123456789abcdef";
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

std::vector<uint8_t> sha256(std::string_view data) { return bank_digest("sha256", data); }

// ---- RFC 8785 ----

// RFC 8785 Appendix B: IEEE-754 bits -> ES6 text.
TEST(Jcs, AppendixBNumbers) {
  const std::pair<uint64_t, const char*> vectors[] = {
      {0x0000000000000000, "0"},
      {0x8000000000000000, "0"},
      {0x0000000000000001, "5e-324"},
      {0x8000000000000001, "-5e-324"},
      {0x7fefffffffffffff, "1.7976931348623157e+308"},
      {0xffefffffffffffff, "-1.7976931348623157e+308"},
      {0x4340000000000000, "9007199254740992"},
      {0xc340000000000000, "-9007199254740992"},
      {0x4430000000000000, "295147905179352830000"},
      {0x44b52d02c7e14af5, "9.999999999999997e+22"},
      {0x44b52d02c7e14af6, "1e+23"},
      {0x44b52d02c7e14af7, "1.0000000000000001e+23"},
      {0x444b1ae4d6e2ef4e, "999999999999999700000"},
      {0x444b1ae4d6e2ef4f, "999999999999999900000"},
      {0x444b1ae4d6e2ef50, "1e+21"},
      {0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
      {0x3eb0c6f7a0b5ed8d, "0.000001"},
      {0x41b3de4355555553, "333333333.3333332"},
      {0x41b3de4355555554, "333333333.33333325"},
      {0x41b3de4355555555, "333333333.3333333"},
      {0x41b3de4355555556, "333333333.3333334"},
      {0x41b3de4355555557, "333333333.33333343"},
      {0xbecbf647612f3696, "-0.0000033333333333333333"},
      {0x43143ff3c1cb0959, "1424953923781206.2"},
  };
  for (const auto& [bits, text] : vectors) {
    const double x = std::bit_cast<double>(bits);
    EXPECT_EQ(es6_number(x), text) << std::hex << bits;
    EXPECT_EQ(canonical_json_rfc8785(json(x)), text) << std::hex << bits;
  }
  for (const uint64_t bits :
       {0x7fffffffffffffffULL, 0x7ff0000000000000ULL, 0xfff0000000000000ULL}) {
    const double x = std::bit_cast<double>(bits);
    expect_error([&] { es6_number(x); }, {"NaN and Infinity"});
    expect_error([&] { canonical_json(json(x)); }, {"NaN and Infinity"});
    expect_error([&] { canonical_json_rfc8785(json(x)); }, {"NaN and Infinity"});
  }
}

// The shared vectors: jcs-<name>.input.json -> jcs-<name>.expected (bytes), or refused when
// there is a jcs-<name>.error.
TEST(Jcs, VectorFiles) {
  int expected = 0, refused = 0;
  for (const auto& entry : fs::directory_iterator(kData)) {
    const std::string file = entry.path().filename();
    const std::string suffix = ".input.json";
    if (!file.starts_with("jcs-") || !file.ends_with(suffix)) continue;
    const std::string name = file.substr(0, file.size() - suffix.size());
    const std::string input = slurp(entry.path());
    SCOPED_TRACE(name);
    if (fs::exists(kData / (name + ".expected"))) {
      ++expected;
      const json v = json::parse(input);
      const std::string want = slurp(kData / (name + ".expected"));
      EXPECT_EQ(canonical_json_rfc8785(v), want);
      // 3.2.4 has 1E30: an integral float >= 2^53, which a config.json may not have
      if (name != "jcs-rfc8785-3.2.4") {
        EXPECT_EQ(canonical_json(v), want);
      }
    } else {
      ASSERT_TRUE(fs::exists(kData / (name + ".error"))) << "neither .expected nor .error";
      ++refused;
      // the hook's path: parse_json_object (config.json) then canonical_json
      expect_error([&] { canonical_json(parse_json_object(input, "config.json")); }, {});
    }
  }
  EXPECT_GE(expected, 4);
  EXPECT_GE(refused, 3);
}

TEST(Jcs, Rfc8785Document) {
  const json doc = json::parse(slurp(kData / "jcs-rfc8785-3.2.4.input.json"));
  EXPECT_EQ(canonical_json_rfc8785(doc),
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],"
            "\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}");
  // 1E30 is a float token: the hook refuses it in what it measures (no exact integer)
  expect_error([&] { canonical_json(doc); }, {"numbers[1]", "1e+30", "integral"});
}

// RFC 8785 3.2.3: UTF-16 code unit order, not UTF-8 byte order (U+1F600 is D83D DE00, before
// U+FB33; in UTF-8 it is F0 9F 98 80, after EF AC B3).
TEST(Jcs, SortsByUtf16CodeUnits) {
  const json doc = json::parse(slurp(kData / "jcs-sort-3.2.3.input.json"));
  const std::string out = canonical_json(doc);
  std::vector<size_t> at;
  for (const char* key :
       {"\\r", "1", "\xc2\x80", "\xc3\xb6", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xef\xac\xb3"})
    at.push_back(out.find("\"" + std::string(key) + "\":"));
  for (size_t i = 0; i < at.size(); ++i) {
    ASSERT_NE(at[i], std::string::npos) << i << " in " << out;
    if (i) {
      EXPECT_LT(at[i - 1], at[i]) << "key " << i << " out of order in " << out;
    }
  }
}

TEST(Jcs, BigIntegersBecomeStrings) {
  EXPECT_EQ(
      canonical_json(json::parse(
          R"({"rlimits":[{"type":"RLIMIT_NOFILE","hard":18446744073709551615,"soft":1048576}]})")),
      R"({"rlimits":[{"hard":"18446744073709551615","soft":1048576,"type":"RLIMIT_NOFILE"}]})");
  EXPECT_EQ(canonical_json(json::parse("[9007199254740991,-9007199254740991]")),
            "[9007199254740991,-9007199254740991]");
  EXPECT_EQ(canonical_json(json::parse("[9007199254740992,-9007199254740992]")),
            R"(["9007199254740992","-9007199254740992"])");
  EXPECT_EQ(canonical_json(json(std::numeric_limits<int64_t>::min())), R"("-9223372036854775808")");
  EXPECT_EQ(canonical_json(json(std::numeric_limits<uint64_t>::max())),
            R"("18446744073709551615")");
}

TEST(Jcs, Numbers) {
  EXPECT_EQ(canonical_json(json::parse("[1.0,-0,-0.0,4.50,2e-3,1E2]")), "[1,0,0,4.5,0.002,100]");
  // beyond uint64 an integer token is a float to nlohmann: refused, not rounded
  expect_error([] { canonical_json(json::parse(R"({"hard":18446744073709551616})")); },
               {"hard", "integral and >= 2^53"});
  expect_error([] { canonical_json(json::parse("[-9223372036854775809]")); }, {"[0]", "integral"});
  EXPECT_EQ(canonical_json(json::parse("[9007199254740991.0, 0.5e16]")),
            "[9007199254740991,5000000000000000]");
  expect_error([] { canonical_json(json(HUGE_VAL)); }, {"NaN and Infinity"});
  // 1e400 in config.json text: the parser refuses it already
  expect_error([] { parse_json_object(R"({"x":1e400})", "config.json"); }, {"config.json"});
}

TEST(Jcs, Unicode) {
  const json env = {{"env",
                     {"A=Jos\xc3\xa9",
                      "B=a\xe2\x80\xa8"
                      "b",
                      "C=\xf0\x9f\x98\x80", "D=x\x1fy", std::string("E=\0z", 4), "F=\x7f/\"\\\t"}}};
  EXPECT_EQ(canonical_json(env),
            "{\"env\":[\"A=Jos\xc3\xa9\",\"B=a\xe2\x80\xa8"
            "b\",\"C=\xf0\x9f\x98\x80\",\"D=x\\u001fy\","
            "\"E=\\u0000z\",\"F=\x7f/\\\"\\\\\\t\"]}");
  // invalid UTF-8 in a value or a member name: refused, naming where
  expect_error(
      [] {
        canonical_json(json{{"process", {{"env", {"OK=1", "BAD=\xff"}}}}});
      },
      {"process.env[1]", "not valid UTF-8"});
  expect_error([] { canonical_json(json{{"sysctl", {{"k\xc3(", "1"}}}}); }, {"sysctl", "UTF-8"});
  // an overlong encoding and a UTF-8-encoded surrogate are not UTF-8 either
  expect_error([] { canonical_json(json("\xc0\xaf")); }, {"UTF-8"});
  expect_error([] { canonical_json(json("\xed\xa0\x80")); }, {"UTF-8"});
}

// ---- the projection of config.json ----

json docker_config() { return json::parse(slurp(kData / "docker-config.json")); }

std::string canonical_config(const json& config) { return canonical_json(measured_config(config)); }

TEST(MeasuredConfig, DockerConfigVector) {
  const std::string got = canonical_config(docker_config());
  EXPECT_EQ(got, slurp(kData / "docker-config.canonical.json"));
  EXPECT_EQ(hex(sha256(got)), "d7ea5831470789ea7bb4aad6ee651799b94fcc7c37f3c0691750687552f29deb");
  EXPECT_EQ(slurp(kData / "docker-config.sha256"),
            "d7ea5831470789ea7bb4aad6ee651799b94fcc7c37f3c0691750687552f29deb\n");
}

TEST(MeasuredConfig, KeepsWhatRunsAndItsRightsOnly) {
  const json m = measured_config(docker_config());
  EXPECT_EQ(m.size(), 4u);  // process, root, mounts, linux
  EXPECT_FALSE(m["process"].contains("terminal"));
  EXPECT_FALSE(m["process"].contains("consoleSize"));
  EXPECT_FALSE(m["process"].contains("oomScoreAdj"));
  EXPECT_EQ(m["root"], json({{"readonly", false}}));
  EXPECT_EQ(m["mounts"][0], json::parse(R"({"destination":"/proc","type":"proc","source":"proc",
                                            "options":["nosuid","noexec","nodev"]})"));
  // a bind mount's source is a host path; an overlay loses its host-path options
  EXPECT_EQ(m["mounts"][6],
            json::parse(R"({"destination":"/data","type":"bind","options":["rbind"]})"));
  EXPECT_EQ(m["mounts"][7], json::parse(R"({"destination":"/srv/app/static","type":"overlay",
                                            "options":["ro","index=off"]})"));
  EXPECT_EQ(m["linux"]["namespaces"][1], json::parse(R"({"type":"network","joined":true})"));
  EXPECT_EQ(m["linux"]["resources"].size(), 1u);
  EXPECT_FALSE(m["linux"]["seccomp"].contains("listenerPath"));
  EXPECT_FALSE(m["linux"]["seccomp"].contains("listenerMetadata"));
  for (const char* k : {"cgroupsPath", "vtpms", "uidMappings"})
    EXPECT_FALSE(m["linux"].contains(k));
  // absent stays absent, null stays null
  EXPECT_EQ(measured_config(json::object()), json::object());
  EXPECT_EQ(measured_config(json::parse(R"({"process":{"args":null},"root":{"path":"/r"}})")),
            json::parse(R"({"process":{"args":null}})"));
  expect_error([] { measured_config(json::array()); }, {"not a JSON object"});
}

// A source is kept only for a pseudo filesystem's conventional name, and never with bind/rbind
// (runc and crun bind whatever the type says then).
TEST(MeasuredConfig, MountSources) {
  auto source_kept = [](const char* mount) {
    return measured_config(json{{"mounts", {json::parse(mount)}}})["mounts"][0].contains("source");
  };
  EXPECT_TRUE(source_kept(R"({"destination":"/t","type":"tmpfs","source":"shm"})"));
  EXPECT_TRUE(source_kept(R"({"destination":"/s","type":"cgroup2","source":"cgroup"})"));
  EXPECT_FALSE(
      source_kept(R"({"destination":"/t","type":"tmpfs","source":"/h","options":["rbind"]})"));
  EXPECT_FALSE(
      source_kept(R"({"destination":"/t","type":"proc","source":"/h","options":["bind"]})"));
  EXPECT_FALSE(source_kept(R"({"destination":"/d","type":"bind","source":"/h"})"));
  EXPECT_FALSE(source_kept(R"({"destination":"/d","source":"/h","options":["rbind"]})"));
  EXPECT_FALSE(source_kept(R"({"destination":"/d","type":"ext4","source":"/dev/sda1"})"));
  EXPECT_FALSE(source_kept(R"({"destination":"/d","type":"overlay","source":"overlay"})"));
}

// Each change of a measured field changes the digest, each change of an excluded one does not.
TEST(MeasuredConfig, ExcludedFieldsDoNotCountMeasuredOnesDo) {
  const json base = docker_config();
  const std::string base_digest = hex(sha256(canonical_config(base)));
  auto digest_with = [&](auto change) {
    json c = base;
    change(c);
    return hex(sha256(canonical_config(c)));
  };
  const std::pair<const char*, std::function<void(json&)>> excluded[] = {
      {"ociVersion", [](json& c) { c["ociVersion"] = "1.1.0"; }},
      {"root.path", [](json& c) { c["root"]["path"] = "/elsewhere/merged"; }},
      {"hooks", [](json& c) { c["hooks"]["prestart"][0]["path"] = "/proc/1/exe"; }},
      {"no hooks", [](json& c) { c.erase("hooks"); }},
      {"annotations", [](json& c) { c["annotations"]["io.kubernetes.cri-o.Created"] = "now"; }},
      {"hostname", [](json& c) { c["hostname"] = "0123456789ab"; }},
      {"domainname", [](json& c) { c["domainname"] = "example.org"; }},
      {"bind source", [](json& c) { c["mounts"][6]["source"] = "/srv/other/_data"; }},
      {"overlay lowerdir", [](json& c) { c["mounts"][7]["options"][0] = "lowerdir=/x"; }},
      {"namespace path", [](json& c) { c["linux"]["namespaces"][1]["path"] = "/proc/1/ns/net"; }},
      {"terminal", [](json& c) { c["process"]["terminal"] = true; }},
      {"consoleSize", [](json& c) { c["process"]["consoleSize"]["width"] = 80; }},
      {"oomScoreAdj", [](json& c) { c["process"]["oomScoreAdj"] = 500; }},
      {"memory limit", [](json& c) { c["linux"]["resources"]["memory"]["limit"] = 1; }},
      {"cgroupsPath", [](json& c) { c["linux"]["cgroupsPath"] = "/x"; }},
      {"uidMappings",
       [](json& c) {
         c["linux"]["uidMappings"] =
             json::parse(R"([{"containerID":0,"hostID":100000,"size":65536}])");
       }},
      {"vtpms", [](json& c) { c["linux"]["vtpms"][0]["statePath"] = "/elsewhere"; }},
      {"seccomp listener",
       [](json& c) { c["linux"]["seccomp"]["listenerPath"] = "/run/other.sock"; }},
  };
  for (const auto& [what, change] : excluded) EXPECT_EQ(digest_with(change), base_digest) << what;
  const std::pair<const char*, std::function<void(json&)>> measured[] = {
      {"env var", [](json& c) { c["process"]["env"][2] = "APP_MODE=debug"; }},
      {"arg", [](json& c) { c["process"]["args"].push_back("--verbose"); }},
      {"capability",
       [](json& c) { c["process"]["capabilities"]["bounding"].push_back("CAP_SYS_ADMIN"); }},
      {"mount option", [](json& c) { c["mounts"][6]["options"].push_back("ro"); }},
      {"root.readonly", [](json& c) { c["root"]["readonly"] = true; }},
      {"seccomp action",
       [](json& c) { c["linux"]["seccomp"]["defaultAction"] = "SCMP_ACT_ALLOW"; }},
      {"rlimit", [](json& c) { c["process"]["rlimits"][1]["hard"] = 65536; }},
      {"user", [](json& c) { c["process"]["user"]["uid"] = 0; }},
      {"namespace joined", [](json& c) { c["linux"]["namespaces"][0]["path"] = "/proc/1/ns/mnt"; }},
      {"named source", [](json& c) { c["mounts"][1]["source"] = "shm"; }},
      {"device cgroup", [](json& c) { c["linux"]["resources"]["devices"][0]["allow"] = true; }},
      {"masked path", [](json& c) { c["linux"]["maskedPaths"].erase(0); }},
  };
  for (const auto& [what, change] : measured) EXPECT_NE(digest_with(change), base_digest) << what;
}

// Member order is the writer's business: the same config with members permuted, same bytes.
TEST(MeasuredConfig, MemberOrderDoesNotMatter) {
  const std::string text = slurp(kData / "docker-config.json");
  // python's json.dumps keeps insertion order: write the members back to front by hand
  std::string permuted;
  std::function<void(const json&)> write = [&](const json& v) {
    if (v.is_object()) {
      permuted += '{';
      std::vector<std::string> keys;
      for (auto it = v.begin(); it != v.end(); ++it) keys.push_back(it.key());
      for (size_t i = keys.size(); i-- > 0;) {
        permuted += json(keys[i]).dump() + ':';
        write(v[keys[i]]);
        if (i) permuted += ',';
      }
      permuted += '}';
    } else if (v.is_array()) {
      permuted += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) permuted += ',';
        write(v[i]);
      }
      permuted += ']';
    } else {
      permuted += v.dump();
    }
  };
  write(json::parse(text));
  ASSERT_NE(permuted.substr(0, 20), json::parse(text).dump().substr(0, 20));
  EXPECT_EQ(canonical_config(json::parse(permuted)), slurp(kData / "docker-config.canonical.json"));
}

// ---- the events ----

// Only the banks the emulator asked for; another vTPM's banks are added to the same events.
TEST(LaunchEvents, DigestsOfTheAskedBanksOnly) {
  auto events =
      launch_events(docker_config(), ImageSource::None, std::vector<std::string>{"sha256"});
  ASSERT_EQ(events.size(), 3u);
  for (const auto& e : events) {
    ASSERT_EQ(e.digests.size(), 1u);
    EXPECT_EQ(e.digests.at("sha256"), bank_digest("sha256", e.canonical));
  }
  add_bank_digests(events, std::vector<std::string>{"sha256", "sha384"});
  for (const auto& e : events) {
    ASSERT_EQ(e.digests.size(), 2u);
    EXPECT_EQ(e.digests.at("sha384"), bank_digest("sha384", e.canonical));
  }
  expect_error([&] { add_bank_digests(events, std::vector<std::string>{"md5"}); },
               {"unknown PCR bank \"md5\""});
}

TEST(LaunchEvents, ThreeEventsWithEveryBank) {
  const auto events = launch_events(docker_config(), ImageSource::None);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].content["event"], "oci-config");
  EXPECT_EQ(events[0].content["form"], "vtpm-hook/oci-config/1");
  EXPECT_EQ(events[0].content["config"], measured_config(docker_config()));
  EXPECT_EQ(events[1].canonical, R"({"event":"image","source":"none"})");
  EXPECT_EQ(events[2].canonical, R"({"event":"separator"})");
  for (const auto& e : events) {
    EXPECT_EQ(e.canonical, canonical_json(e.content));
    ASSERT_EQ(e.digests.size(), std::size(kPcrBanks));
    for (const auto& b : kPcrBanks) {
      const auto& d = e.digests.at(std::string(b.name));
      const EVP_MD* md =
          EVP_get_digestbyname(b.name == "sm3_256" ? "SM3" : std::string(b.name).c_str());
      ASSERT_NE(md, nullptr) << b.name;
      EXPECT_EQ(d.size(), static_cast<size_t>(EVP_MD_get_size(md))) << b.name;
    }
  }
  // known answers, SM3 (GB/T 32905-2016 A.1) and SHA-256 of the separator
  EXPECT_EQ(hex(bank_digest("sm3_256", "abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0");
  EXPECT_EQ(hex(events[2].digests.at("sha256")), hex(sha256(R"({"event":"separator"})")));
  // every bank against EVP (the hook hashes the SHA banks with OpenSSL's low-level functions)
  for (const auto& b : kPcrBanks) {
    const EVP_MD* md =
        EVP_get_digestbyname(b.name == "sm3_256" ? "SM3" : std::string(b.name).c_str());
    std::vector<uint8_t> want(EVP_MAX_MD_SIZE);
    unsigned int n = 0;
    ASSERT_EQ(EVP_Digest(events[0].canonical.data(), events[0].canonical.size(), want.data(), &n,
                         md, nullptr),
              1);
    want.resize(n);
    EXPECT_EQ(hex(events[0].digests.at(std::string(b.name))), hex(want)) << b.name;
  }
  expect_error([] { bank_digest("md5", "x"); }, {"unknown PCR bank \"md5\""});
  // config.json's errors fail the events
  json bad = docker_config();
  bad["process"]["env"].push_back("X=\xff");
  expect_error([&] { launch_events(bad, ImageSource::None); }, {"process.env[4]", "UTF-8"});
}

TEST(LaunchEvents, ImageFromTheNamedEngineOnly) {
  json config = docker_config();
  config["annotations"] = {
      {"io.kubernetes.cri.image-name", "docker.io/library/busybox:1.36"},
      {"io.kubernetes.cri-o.Image", "quay.io/x/y:1"},
      {"io.kubernetes.cri-o.ImageRef", std::string(64, 'a')},
      {"org.opencontainers.image.ref.name", "evil"},
      {"io.kubernetes.cri-o.Created", "2026-12-03T05:00:00Z"},
  };
  EXPECT_EQ(to_string(ImageSource::None), "none");
  EXPECT_EQ(to_string(ImageSource::Containerd), "containerd");
  EXPECT_EQ(to_string(ImageSource::CriO), "cri-o");
  EXPECT_EQ(launch_events(config, ImageSource::None)[1].canonical,
            R"({"event":"image","source":"none"})");
  EXPECT_EQ(launch_events(config, ImageSource::Containerd)[1].canonical,
            R"({"annotations":{"io.kubernetes.cri.image-name":"docker.io/library/busybox:1.36"},)"
            R"("event":"image","source":"containerd"})");
  EXPECT_EQ(
      launch_events(config, ImageSource::CriO)[1].canonical,
      R"({"annotations":{"io.kubernetes.cri-o.Image":"quay.io/x/y:1","io.kubernetes.cri-o.ImageRef":")" +
          std::string(64, 'a') + R"("},"event":"image","source":"cri-o"})");
  // the engine said nothing: an empty statement, still an event
  config.erase("annotations");
  EXPECT_EQ(launch_events(config, ImageSource::CriO)[1].canonical,
            R"({"annotations":{},"event":"image","source":"cri-o"})");
  // annotations never change event 1
  EXPECT_EQ(launch_events(config, ImageSource::CriO)[0].canonical,
            launch_events(docker_config(), ImageSource::CriO)[0].canonical);
}

// ---- the CEL log ----

TEST(Cel, LogAndReplayRoundTrip) {
  const auto events = launch_events(docker_config(), ImageSource::None);
  const std::string log = cel_log(events, 21, {"sha384", "sha1", "sha256"});
  const json records = json::parse(log);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_NE(log.find("\n  {\n    \"recnum\": 0,"), std::string::npos) << log.substr(0, 200);
  for (size_t i = 0; i < 3; ++i) {
    const json& r = records[i];
    EXPECT_EQ(r["recnum"], i);
    EXPECT_EQ(r["pcr"], 21);
    EXPECT_EQ(r["content_type"], "vtpm_hook");
    EXPECT_EQ(canonical_json(r["content"]), events[i].canonical);
    ASSERT_EQ(r["digests"].size(), 3u);
    // TPM_ALG_ID order: sha1 (4), sha256 (0xb), sha384 (0xc)
    EXPECT_EQ(r["digests"][0]["hashAlg"], "sha1");
    EXPECT_EQ(r["digests"][1]["hashAlg"], "sha256");
    EXPECT_EQ(r["digests"][2]["hashAlg"], "sha384");
    EXPECT_EQ(r["digests"][1]["digest"], hex(events[i].digests.at("sha256")));
  }
  // the replay is PCR_Extend from zeros
  std::vector<uint8_t> want(32, 0);
  for (const auto& e : events) {
    std::string data(want.begin(), want.end());
    data.append(e.digests.at("sha256").begin(), e.digests.at("sha256").end());
    want = sha256(data);
  }
  const auto pcrs = replay_cel(log, 21);
  ASSERT_EQ(pcrs.size(), 3u);
  EXPECT_EQ(hex(pcrs.at("sha256")), hex(want));
  EXPECT_EQ(pcrs.at("sha1").size(), 20u);
  EXPECT_EQ(pcrs.at("sha384").size(), 48u);
  EXPECT_TRUE(replay_cel(log, 22).empty());  // no records for another PCR
  EXPECT_EQ(replay_cel(cel_log(events, 21, {"sha256"}), 21).at("sha256"), pcrs.at("sha256"));
  expect_error([&] { cel_log(events, 21, {"sha256", "md5"}); }, {"unknown PCR bank \"md5\""});
}

TEST(Cel, TamperedLogFailsReplay) {
  const auto events = launch_events(docker_config(), ImageSource::None);
  const json log = json::parse(cel_log(events, 21, {"sha1", "sha256", "sha384"}));
  auto replay = [](const json& l) { return replay_cel(l.dump(), 21); };
  ASSERT_NO_THROW(replay(log));
  json t = log;
  t[0]["content"]["config"]["process"]["env"][2] = "APP_MODE=debug";  // content changed, digest not
  expect_error([&] { replay(t); }, {"record 0", "sha1 digest is not the digest of its content"});
  t = log;
  t[1]["digests"][1]["digest"] = hex(sha256("other"));
  expect_error([&] { replay(t); }, {"record 1", "sha256 digest"});
  t = log;
  t[2]["digests"].erase(2);
  expect_error([&] { replay(t); }, {"record 2", "other banks"});
  t = log;
  t[1]["recnum"] = 2;
  expect_error([&] { replay(t); }, {"record 1: recnum"});
  t = log;
  t[0]["content_type"] = "systemd";
  expect_error([&] { replay(t); }, {"content_type"});
  t = log;
  t[0]["digests"][0]["hashAlg"] = "md5";
  expect_error([&] { replay(t); }, {"unknown hashAlg \"md5\""});
  expect_error([] { replay_cel("{}", 21); }, {"not a JSON array"});
  expect_error([] { replay_cel("[", 21); }, {"not JSON"});
  // reordering the records changes the PCR (recnum catches it first)
  t = log;
  std::swap(t[0], t[1]);
  expect_error([&] { replay(t); }, {"recnum"});
}

TEST(Hex, RoundTripAndRefusals) {
  const std::vector<uint8_t> b = {0x00, 0x9f, 0xff, 0x10};
  EXPECT_EQ(to_hex(b), "009fff10");
  EXPECT_EQ(from_hex("009FfF10"), b);
  EXPECT_EQ(from_hex(""), std::vector<uint8_t>{});
  EXPECT_FALSE(from_hex("abc"));
  EXPECT_FALSE(from_hex("zz"));
  EXPECT_FALSE(from_hex("0x12"));
  EXPECT_EQ(split("a,,b", ','), (std::vector<std::string_view>{"a", "", "b"}));
  EXPECT_EQ(split("", ','), (std::vector<std::string_view>{""}));
}

}  // namespace
}  // namespace vtpm
