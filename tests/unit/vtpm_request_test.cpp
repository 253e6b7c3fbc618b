#include "oci/vtpm_request.h"

#include <gtest/gtest.h>

#include <array>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "error_matchers.h"
#include "oci/oci_config.h"
#include "oci/oci_state.h"

namespace vtpm {
namespace {

using nlohmann::json;

using vtpm::testing::error_of;

// ---- parse_bundle_config ----

TEST(BundleConfig, AbsoluteRootPathIsKept) {
  const auto cfg = parse_bundle_config(R"({"root":{"path":"/srv/rootfs"}})", "/b/c1");
  EXPECT_EQ(cfg.root_path, "/srv/rootfs");
  EXPECT_FALSE(cfg.vtpms.has_value());
  EXPECT_TRUE(cfg.annotations.empty());
}

TEST(BundleConfig, RelativeRootPathIsResolvedAgainstTheBundle) {
  const auto cfg = parse_bundle_config(R"({"root":{"path":"rootfs"}})", "/b/c1");
  EXPECT_EQ(cfg.root_path, "/b/c1/rootfs");
}

TEST(BundleConfig, RootPathIsNormalised) {
  EXPECT_EQ(parse_bundle_config(R"({"root":{"path":"rootfs/../rootfs"}})", "/b/c1").root_path,
            "/b/c1/rootfs");
  EXPECT_EQ(parse_bundle_config(R"({"root":{"path":"./rootfs/"}})", "/b/c1").root_path,
            "/b/c1/rootfs");
  EXPECT_EQ(parse_bundle_config(R"({"root":{"path":"/srv//x/./y/"}})", "/b").root_path, "/srv/x/y");
}

TEST(BundleConfig, MissingRootIsAnError) {
  const auto msg = error_of([] { parse_bundle_config(R"({"process":{}})", "/b/c1"); });
  EXPECT_NE(msg.find("/b/c1/config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"root\""), std::string::npos) << msg;
}

TEST(BundleConfig, MissingRootPathIsAnError) {
  const auto msg = error_of([] { parse_bundle_config(R"({"root":{"readonly":true}})", "/b"); });
  EXPECT_NE(msg.find("\"path\""), std::string::npos) << msg;
}

TEST(BundleConfig, ReadsVtpmsAndAnnotations) {
  const auto cfg = parse_bundle_config(
      R"({"root":{"path":"rootfs"},"annotations":{"a":"b"},
          "linux":{"vtpms":[{"vtpmVersion":"2"}]}})",
      "/b");
  ASSERT_TRUE(cfg.vtpms.has_value());
  EXPECT_EQ(*cfg.vtpms, json::parse(R"([{"vtpmVersion":"2"}])"));
  EXPECT_EQ(cfg.annotations.at("a"), "b");
}

// ---- resolve_vtpms ----

// The administrator allows /data and /s besides the state root (the rules themselves are in
// policy_test.cpp).
const RequestDefaults kDefaults{
    "/var/lib/vtpm-hook", Policy{{"/data", "/s"}, {}, {}, {}, {}, {}}, {}};

OciState state_for(const std::string& id) {
  OciState st;
  st.id = id;
  st.bundle = "/b/" + id;
  st.pid = 100;
  return st;
}

BundleConfig config_with(const std::string& vtpms_json) {
  BundleConfig cfg;
  cfg.root_path = "/b/rootfs";
  cfg.vtpms = json::parse(vtpms_json);
  return cfg;
}

std::vector<VtpmSpec> resolve(const std::string& vtpms_json, const std::string& id = "c1") {
  return resolve_vtpms(state_for(id), config_with(vtpms_json), kDefaults);
}

std::string resolve_error(const std::string& vtpms_json) {
  return error_of([&] { resolve(vtpms_json); });
}

TEST(ResolveVtpms, DefaultIsOneTpm2UnderStateRoot) {
  BundleConfig cfg;
  cfg.root_path = "/b/rootfs";
  const auto specs = resolve_vtpms(state_for("web"), cfg, kDefaults);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].index, 0u);
  EXPECT_EQ(specs[0].version, TpmVersion::V2);
  EXPECT_EQ(specs[0].state_path, "/var/lib/vtpm-hook/web");
  EXPECT_FALSE(specs[0].state_path_managed);
}

// The administrator's default (setup --default-version ..., e.g. from a CDI device) applies only
// when nothing else asks; an annotation or linux.vtpms still decides.
TEST(ResolveVtpms, AdministratorsDefaultWhenNothingAsks) {
  RequestDefaults d = kDefaults;
  d.vtpm = {TpmVersion::V2, {"sha256"}, true};
  BundleConfig cfg;
  cfg.root_path = "/b/rootfs";
  auto specs = resolve_vtpms(state_for("web"), cfg, d);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].state_path, "/var/lib/vtpm-hook/web");
  EXPECT_EQ(specs[0].pcr_banks, std::vector<std::string>{"sha256"});
  EXPECT_TRUE(specs[0].create_certs);
  d.vtpm = {TpmVersion::V1_2, {}, false};
  EXPECT_EQ(resolve_vtpms(state_for("web"), cfg, d)[0].version, TpmVersion::V1_2);
  OciState annotated = state_for("web");
  annotated.annotations[kAnnotationVtpm] = "2";
  d.policy.annotation_fields = {"vtpmVersion"};
  EXPECT_EQ(resolve_vtpms(annotated, cfg, d)[0].version, TpmVersion::V2);
  cfg.vtpms = nlohmann::json::parse(R"([{"vtpmVersion": "2"}])");
  EXPECT_EQ(resolve_vtpms(state_for("web"), cfg, d)[0].version, TpmVersion::V2);
}

TEST(ResolveVtpms, EmptyObjectEntryGetsDefaults) {
  const auto specs = resolve("[{}]", "web");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].version, TpmVersion::V2);
  EXPECT_EQ(specs[0].state_path, "/var/lib/vtpm-hook/web");
}

TEST(ResolveVtpms, TwoEntries) {
  const auto specs = resolve(R"([
      {"statePath": "/data/tpm-a/", "statePathIsManaged": true, "vtpmVersion": "2.0"},
      {"vtpmVersion": "2"}])",
                             "web");
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[0].index, 0u);
  EXPECT_EQ(specs[0].version, TpmVersion::V2);
  EXPECT_EQ(specs[0].state_path, "/data/tpm-a");  // trailing slash dropped
  EXPECT_TRUE(specs[0].state_path_managed);
  EXPECT_EQ(specs[1].index, 1u);
  EXPECT_EQ(specs[1].version, TpmVersion::V2);
  EXPECT_EQ(specs[1].state_path, "/var/lib/vtpm-hook/web@tpm1");
  EXPECT_FALSE(specs[1].state_path_managed);
}

TEST(ResolveVtpms, Version12) {
  const auto specs = resolve(R"([{"vtpmVersion":"1.2","statePath":"/s/old"}])");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].version, TpmVersion::V1_2);
  EXPECT_EQ(specs[0].state_path, "/s/old");
}

TEST(ResolveVtpms, UnknownVersionIsAnError) {
  const auto msg = resolve_error(R"([{"vtpmVersion":"3"}])");
  EXPECT_NE(msg.find("linux.vtpms[0]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"vtpmVersion\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"3\""), std::string::npos) << msg;
}

TEST(ResolveVtpms, NonStringVersionIsAnError) {
  const auto msg = resolve_error(R"([{"vtpmVersion":2}])");
  EXPECT_NE(msg.find("\"vtpmVersion\""), std::string::npos) << msg;
}

TEST(ResolveVtpms, RelativeStatePathIsAnError) {
  const auto msg = resolve_error(R"([{"statePath":"state/tpm"}])");
  EXPECT_NE(msg.find("linux.vtpms[0]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"statePath\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an absolute path"), std::string::npos) << msg;
}

TEST(ResolveVtpms, RootStatePathIsAnError) {
  const auto msg = resolve_error(R"([{"statePath":"//"}])");
  EXPECT_NE(msg.find("\"statePath\""), std::string::npos) << msg;
}

TEST(ResolveVtpms, DuplicateStatePathIsAnError) {
  const auto msg = resolve_error(R"([{"statePath":"/s/a"},{"statePath":"/s/a/"}])");
  EXPECT_NE(msg.find("linux.vtpms[1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/s/a"), std::string::npos) << msg;
  EXPECT_NE(msg.find("twice"), std::string::npos) << msg;
}

TEST(ResolveVtpms, UnknownFieldIsAnError) {
  const auto msg = resolve_error(R"([{"vtpmVersion":"2"},{"stateDir":"/x"}])");
  EXPECT_NE(msg.find("linux.vtpms[1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown field \"stateDir\""), std::string::npos) << msg;
}

TEST(ResolveVtpms, CreateCertsNeedsTpm2) {
  const auto msg = resolve_error(R"([{"createCerts":true,"vtpmVersion":"1.2"}])");
  EXPECT_NE(msg.find("\"createCerts\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("need vtpmVersion \"2\""), std::string::npos) << msg;
}

TEST(ResolveVtpms, PlatformHierarchyIsClosedUnlessAsked) {
  EXPECT_FALSE(resolve("[{}]")[0].open_platform);
  EXPECT_TRUE(resolve(R"([{"openPlatformHierarchy":true}])")[0].open_platform);
  const auto msg = resolve_error(R"([{"openPlatformHierarchy":true,"vtpmVersion":"1.2"}])");
  EXPECT_NE(msg.find("\"openPlatformHierarchy\" needs vtpmVersion \"2\""), std::string::npos)
      << msg;
  EXPECT_NE(resolve_error(R"([{"openPlatformHierarchy":"yes"}])").find("openPlatformHierarchy"),
            std::string::npos);
}

TEST(ResolveVtpms, AllProposalFieldsAreRead) {
  const auto specs = resolve(
      R"([{"createCerts":true,"pcrBanks":"sha256,sha384","runAs":"tss","statePathIsManaged":true,
           "encryptionKeyFile":"/etc/keys/../keys/k"}])");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_TRUE(specs[0].create_certs);
  EXPECT_EQ(specs[0].pcr_banks, (std::vector<std::string>{"sha256", "sha384"}));
  EXPECT_EQ(specs[0].run_as, "tss");
  EXPECT_TRUE(specs[0].state_path_managed);
  EXPECT_EQ(specs[0].key_file, "/etc/keys/k");
}

TEST(ResolveVtpms, CreateCertsFalseIsAccepted) {
  const auto specs = resolve(R"([{"createCerts":false,"pcrBanks":null}])");
  EXPECT_EQ(specs.size(), 1u);
}

TEST(ResolveVtpms, NotAnArrayIsAnError) {
  const auto msg = resolve_error(R"({"vtpmVersion":"2"})");
  EXPECT_NE(msg.find("linux.vtpms"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an array"), std::string::npos) << msg;
}

TEST(ResolveVtpms, EntryNotAnObjectIsAnError) {
  const auto msg = resolve_error(R"([{}, "2"])");
  EXPECT_NE(msg.find("linux.vtpms[1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an object"), std::string::npos) << msg;
}

TEST(ResolveVtpms, TooManyEntriesIsAnError) {
  const auto msg = resolve_error("[{},{},{},{},{},{},{},{},{}]");
  EXPECT_NE(msg.find("9 entries"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at most 8"), std::string::npos) << msg;
}

TEST(ResolveVtpms, EightEntriesAreAccepted) {
  const auto specs = resolve("[{},{},{},{},{},{},{},{}]", "x");
  ASSERT_EQ(specs.size(), 8u);
  EXPECT_EQ(specs[7].index, 7u);
  EXPECT_EQ(specs[7].state_path, "/var/lib/vtpm-hook/x@tpm7");
}

TEST(ResolveVtpms, EmptyArrayMeansNoVtpms) { EXPECT_TRUE(resolve("[]").empty()); }

// ---- annotation paths never reach the hook's own directories (issue 18, hole 5) ----

// A policy that load refuses (check_policy_roots, policy_test.cpp), handed to resolve_vtpms
// anyway: statePathRoots ["/var/lib", "/run"] and statePath (managed) by annotation.
RequestDefaults wide_roots(const std::string& state_root = "/var/lib/vtpm-hook") {
  RequestDefaults d{
      state_root, Policy{{"/var/lib", "/run"}, {}, {}, {}, {}, {}}, {state_root + "/ca"}};
  d.run_root = "/run/vtpm-hook";
  d.policy.annotation_fields = {"vtpmVersion", "statePath", "statePathIsManaged"};
  return d;
}

OciState attacker(std::map<std::string, std::string> annotations) {
  OciState st = state_for("attacker");
  st.annotations = std::move(annotations);
  return st;
}

std::string annotation_error(const std::string& state_path, bool managed,
                             const RequestDefaults& d = wide_roots()) {
  std::map<std::string, std::string> ann = {{kAnnotationVtpm, "2"},
                                            {"io.vtpm-hook.state-path", state_path}};
  if (managed) ann["io.vtpm-hook.state-path-is-managed"] = "true";
  return error_of([&] { resolve_vtpms(attacker(ann), BundleConfig{"/b/rootfs", {}, {}}, d); });
}

TEST(AnnotationPaths, AnotherContainersStateIsOutOfReachWhateverThePolicyRoots) {
  for (bool managed : {false, true}) {
    const auto msg = annotation_error("/var/lib/vtpm-hook/victim", managed);
    EXPECT_NE(msg.find("\"statePath\" /var/lib/vtpm-hook/victim reaches the state root "
                       "/var/lib/vtpm-hook, which no annotation may reach"),
              std::string::npos)
        << msg;
  }
  // The io.vtpm-hook.vtpms form, managed deletion included.
  const auto st =
      attacker({{kAnnotationVtpms,
                 R"([{"statePath":"/var/lib/vtpm-hook/victim","statePathIsManaged":true}])"}});
  EXPECT_NE(error_of([&] {
              resolve_vtpms(st, BundleConfig{"/b/rootfs", {}, {}}, wide_roots());
            }).find("reaches the state root"),
            std::string::npos);
}

TEST(AnnotationPaths, TheStateRootRunRootAndCaAreOutOfReach) {
  for (const auto& [path, what] : std::vector<std::pair<std::string, std::string>>{
           {"/var/lib/vtpm-hook/kubernetes/shop_db-0_postgres", "the state root"},
           {"/var/lib/vtpm-hook/victim@tpm1", "the state root"},
           {"/var/lib/vtpm-hook/ca/x", "keeps for itself"},  // reserved from any source
           {"/run/vtpm-hook/victim", "the run root"},
           {"/run/vtpm-hook/empty", "the run root"}})
    EXPECT_NE(annotation_error(path, true).find(what), std::string::npos)
        << annotation_error(path, true);
  // A directory above the state root: managed deletion would take every TPM with it.
  auto d = wide_roots("/var/lib/hook/states");
  d.reserved = {"/etc/vtpm-ca"};
  const auto msg = annotation_error("/var/lib/hook", true, d);
  EXPECT_NE(msg.find("\"statePath\" /var/lib/hook reaches the state root /var/lib/hook/states"),
            std::string::npos)
      << msg;
}

TEST(AnnotationPaths, OtherPathsUnderTheRootsAndTheRuntimesPathsStillWork) {
  std::map<std::string, std::string> ann = {{kAnnotationVtpm, "2"},
                                            {"io.vtpm-hook.state-path", "/var/lib/tpms/a"}};
  const auto specs = resolve_vtpms(attacker(ann), BundleConfig{"/b/rootfs", {}, {}}, wide_roots());
  EXPECT_EQ(specs.at(0).state_path, "/var/lib/tpms/a");
  // config.json is the runtime's: it may still name directories of the state root.
  BundleConfig cfg =
      config_with(R"([{"statePath":"/var/lib/vtpm-hook/x","statePathIsManaged":true}])");
  const auto mine = resolve_vtpms(state_for("c1"), cfg, wide_roots());
  EXPECT_EQ(mine.at(0).state_path, "/var/lib/vtpm-hook/x");
  EXPECT_EQ(mine.at(0).state_root, "/var/lib/vtpm-hook");
}

// ---- key files: never the CA's or another tenant's (issue 18, hole 11) ----

RequestDefaults key_defaults(std::vector<std::string> key_roots = {}) {
  RequestDefaults d{
      "/var/lib/vtpm-hook", Policy{{"/srv/tpms"}, {}, {}, {}, {}, {}}, {"/etc/vtpm-ca"}};
  d.run_root = "/run/vtpm-hook";
  d.policy.annotation_fields = {"vtpmVersion", "encryptionKeyFile", "encryptionPasswordFile"};
  d.policy.key_file_roots = std::move(key_roots);
  return d;
}

std::string config_key_error(const std::string& field, const std::string& path,
                             const RequestDefaults& d = key_defaults()) {
  const auto cfg = config_with(R"([{")" + field + R"(":")" + path + R"("}])");
  return error_of([&] { resolve_vtpms(state_for("c1"), cfg, d); });
}

TEST(KeyFiles, NeverInTheStateRootRunRootOrCaDirectoryFromAnySource) {
  for (const auto& [field, path, where] : std::vector<std::array<std::string, 3>>{
           // the CA's key as a password: its directory is reserved (--ca-key elsewhere too)
           {"encryptionPasswordFile", "/etc/vtpm-ca/ek-ca-key.pem", "the CA's directory"},
           {"encryptionPasswordFile", "/var/lib/vtpm-hook/ca/ek-ca-key.pem", "the state root"},
           // another tenant's key beside its state, a TPM's state file as a password
           {"encryptionKeyFile", "/var/lib/vtpm-hook/victim/key", "the state root"},
           {"encryptionPasswordFile", "/var/lib/vtpm-hook/victim/tpm2-00.permall",
            "the state root"},
           {"encryptionKeyFile", "/run/vtpm-hook/victim.json", "the run root"},
           {"encryptionKeyFile", "/var/lib/vtpm-hook/x/../victim/key", "the state root"}}) {
    const auto msg = config_key_error(field, path);
    EXPECT_NE(msg.find("\"" + field + "\""), std::string::npos) << msg;
    EXPECT_NE(msg.find("lies in " + where), std::string::npos) << msg;
    EXPECT_NE(msg.find("where no key file may be"), std::string::npos) << msg;
  }
  // Elsewhere, config.json (the runtime's) names any path, as before.
  const auto specs =
      resolve_vtpms(state_for("c1"), config_with(R"([{"encryptionKeyFile":"/etc/keys/c1.key"}])"),
                    key_defaults());
  EXPECT_EQ(specs.at(0).key_file, "/etc/keys/c1.key");
}

TEST(KeyFiles, FromAnAnnotationOnlyBeneathTheKeyFileRoots) {
  const auto ann = [](const std::string& field, const std::string& path) {
    return attacker({{kAnnotationVtpms, R"([{")" + field + R"(":")" + path + R"("}])"}});
  };
  const BundleConfig cfg{"/b/rootfs", {}, {}};
  // No keyFileRoots (the default): allowed as a field, but no path is.
  auto msg = error_of(
      [&] { resolve_vtpms(ann("encryptionKeyFile", "/etc/keys/k"), cfg, key_defaults()); });
  EXPECT_NE(msg.find("not under a policy keyFileRoots entry (none)"), std::string::npos) << msg;
  const auto d = key_defaults({"/etc/tenant-keys"});
  EXPECT_EQ(resolve_vtpms(ann("encryptionKeyFile", "/etc/tenant-keys/a/k"), cfg, d).at(0).key_file,
            "/etc/tenant-keys/a/k");
  for (const char* path :
       {"/etc/shadow", "/etc/tenant-keys", "/etc/tenant-keys/../shadow", "/etc/tenant-keysx/k"}) {
    msg = error_of([&] { resolve_vtpms(ann("encryptionPasswordFile", path), cfg, d); });
    EXPECT_NE(msg.find("not under a policy keyFileRoots entry (/etc/tenant-keys)"),
              std::string::npos)
        << msg;
  }
  // Roots that load would refuse still do not open the state root or the CA to annotations.
  const auto wide = key_defaults({"/var/lib", "/etc"});
  for (const char* path : {"/var/lib/vtpm-hook/victim/key", "/etc/vtpm-ca/ek-ca-key.pem"}) {
    msg = error_of([&] { resolve_vtpms(ann("encryptionPasswordFile", path), cfg, wide); });
    EXPECT_NE(msg.find("where no key file may be"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace vtpm
