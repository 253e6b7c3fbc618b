// The trust boundary: what the administrator's policy lets each source choose, and where state
// may live. Annotations are the workload author's; linux.vtpms is the runtime's.
#include "oci/policy.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "error_matchers.h"
#include "oci/vtpm_request.h"

namespace vtpm {
namespace {

using vtpm::testing::error_of;
using vtpm::testing::expect_error;

const std::string kRoot = "/var/lib/vtpm-hook";

OciState state_with(std::map<std::string, std::string> annotations, const std::string& id = "c1") {
  OciState st;
  st.id = id;
  st.bundle = "/b/" + id;
  st.pid = 100;
  st.annotations = std::move(annotations);
  return st;
}

BundleConfig config(const std::string& vtpms_json = "") {
  BundleConfig cfg;
  cfg.root_path = "/b/rootfs";
  if (!vtpms_json.empty()) cfg.vtpms = nlohmann::json::parse(vtpms_json);
  return cfg;
}

RequestDefaults defaults(Policy p = {}) { return {kRoot, std::move(p), {kRoot + "/ca"}}; }

// ---- the policy document ----

TEST(Policy, DefaultsAllowOnlyHarmlessAnnotationFields) {
  const Policy p;
  EXPECT_TRUE(p.state_path_roots.empty());
  EXPECT_EQ(p.annotation_fields, (std::set<std::string>{"vtpmVersion", "pcrBanks", "createCerts"}));
  EXPECT_EQ(parse_policy("{}", "p").annotation_fields, p.annotation_fields);
}

TEST(Policy, ParsesRootsAndFields) {
  const auto p = parse_policy(
      R"({"statePathRoots":["/srv/tpms/","/data//x"],"annotationFields":["statePath"]})", "p");
  EXPECT_EQ(p.state_path_roots, (std::vector<std::string>{"/srv/tpms", "/data/x"}));
  EXPECT_EQ(p.annotation_fields, (std::set<std::string>{"statePath"}));
  EXPECT_TRUE(parse_policy(R"({"annotationFields":[]})", "p").annotation_fields.empty());
}

TEST(Policy, RejectsWhatItDoesNotKnow) {
  expect_error([] { parse_policy(R"({"stateRoots":[]})", "p"); }, {"unknown key \"stateRoots\""});
  expect_error([] { parse_policy(R"({"annotationFields":["hostPath"]})", "p"); },
               {"\"hostPath\"", "not a linux.vtpms field"});
  expect_error([] { parse_policy(R"({"statePathRoots":["relative/dir"]})", "p"); },
               {"not an absolute path"});
  expect_error([] { parse_policy(R"({"statePathRoots":["/"]})", "p"); }, {"may not be /"});
  expect_error([] { parse_policy(R"({"statePathRoots":"/srv"})", "p"); }, {"not an array"});
  expect_error([] { parse_policy("[1]", "p"); }, {"not a JSON object"});
}

TEST(Policy, MeasurementPcrIsOneTheWorkloadCannotReset) {
  EXPECT_EQ(Policy{}.measurement_pcr, 21u);
  EXPECT_EQ(parse_policy("{}", "p").measurement_pcr, 21u);
  EXPECT_FALSE(parse_policy(R"({"measurementPcr":null})", "p").measurement_pcr);
  EXPECT_EQ(parse_policy(R"({"measurementPcr":22})", "p").measurement_pcr, 22u);
  EXPECT_EQ(parse_policy(R"({"measurementPcr":14})", "p").measurement_pcr, 14u);
  // 16 and 23: resettable at locality 0, so by the workload; 17-19: not by the emulator.
  for (const char* bad : {"16", "23", "17", "19", "24", "-1", "4294967317", "\"21\"", "21.0"})
    expect_error([&] { parse_policy(std::string(R"({"measurementPcr":)") + bad + "}", "p"); },
                 {"\"measurementPcr\" must be null, 0-15 or 20-22"});
  // Never from an annotation: it is no linux.vtpms field.
  expect_error([] { parse_policy(R"({"annotationFields":["measurementPcr"]})", "p"); },
               {"not a linux.vtpms field"});
}

TEST(Policy, MeasurementImageFollowsTheKubernetesEngineUnlessNamed) {
  EXPECT_EQ(parse_policy("{}", "p").measurement_image, ImageSource::None);
  EXPECT_EQ(parse_policy(R"({"kubernetesIdentity":"containerd"})", "p").measurement_image,
            ImageSource::Containerd);
  EXPECT_EQ(parse_policy(R"({"measurementImage":"auto","kubernetesIdentity":"cri-o"})", "p")
                .measurement_image,
            ImageSource::CriO);
  EXPECT_EQ(parse_policy(R"({"kubernetesIdentity":"cri-o","measurementImage":"none"})", "p")
                .measurement_image,
            ImageSource::None);
  EXPECT_EQ(parse_policy(R"({"measurementImage":"containerd"})", "p").measurement_image,
            ImageSource::Containerd);
  expect_error([] { parse_policy(R"({"measurementImage":"podman"})", "p"); },
               {"\"measurementImage\" must be"});
}

TEST(Policy, SelfTestOnDemandUnlessPowerOn) {
  EXPECT_TRUE(parse_policy("{}", "p").self_test_on_demand);
  EXPECT_TRUE(parse_policy(R"({"selfTest":"onDemand"})", "p").self_test_on_demand);
  EXPECT_FALSE(parse_policy(R"({"selfTest":"powerOn"})", "p").self_test_on_demand);
  expect_error([] { parse_policy(R"({"selfTest":true})", "p"); }, {"\"selfTest\" must be"});
  // The host's choice: no annotation names it.
  expect_error([] { parse_policy(R"({"annotationFields":["selfTest"]})", "p"); },
               {"not a linux.vtpms field"});
}

TEST(Policy, TemplateIsAutoUnlessOff) {
  EXPECT_TRUE(Policy{}.use_template);
  EXPECT_TRUE(parse_policy("{}", "p").use_template);
  EXPECT_TRUE(parse_policy(R"({"template":"auto"})", "p").use_template);
  EXPECT_FALSE(parse_policy(R"({"template":"off"})", "p").use_template);
  for (const char* bad : {"\"on\"", "\"Auto\"", "\"\"", "true", "false", "0", "null", "[\"off\"]"})
    expect_error([&] { parse_policy(std::string(R"({"template":)") + bad + "}", "p"); },
                 {"\"template\" must be \"auto\" or \"off\""});
}

TEST(Policy, TemplateIdleSecondsIsZeroToADay) {
  EXPECT_EQ(Policy{}.template_idle_seconds, 60u);
  EXPECT_EQ(parse_policy("{}", "p").template_idle_seconds, 60u);
  EXPECT_EQ(parse_policy(R"({"templateIdleSeconds":0})", "p").template_idle_seconds, 0u);
  EXPECT_EQ(parse_policy(R"({"templateIdleSeconds":5})", "p").template_idle_seconds, 5u);
  EXPECT_EQ(parse_policy(R"({"templateIdleSeconds":86400})", "p").template_idle_seconds, 86400u);
  for (const char* bad : {"86401", "4294967296", "18446744073709551615", "-1", "-0.5", "1.5",
                          "60.0", "1e3", "\"60\"", "null", "true", "[60]"})
    expect_error([&] { parse_policy(std::string(R"({"templateIdleSeconds":)") + bad + "}", "p"); },
                 {"\"templateIdleSeconds\" must be 0 to 86400"});
}

TEST(Policy, TemplateIsTheHostsChoiceAlone) {
  // No policy can hand either to annotations: they are no linux.vtpms fields...
  for (const char* f : {"template", "templateIdleSeconds"})
    expect_error([&] { parse_policy(std::string(R"({"annotationFields":[")") + f + "\"]}", "p"); },
                 {"not a linux.vtpms field"});
  // ...so neither an annotation nor config.json can name them in a TPM's entry.
  for (const char* entry : {R"({"template":"off"})", R"({"templateIdleSeconds":0})"}) {
    const auto st = state_with({{"io.vtpm-hook.vtpms", std::string("[") + entry + "]"}});
    expect_error([&] { resolve_vtpms(st, config(), defaults()); }, {"unknown field"});
    expect_error(
        [&] { resolve_vtpms(state_with({}), config(std::string("[") + entry + "]"), defaults()); },
        {"unknown field"});
  }
}

TEST(Policy, ParsesKeyFileRootsAndThePodUidOption) {
  const auto p = parse_policy(
      R"({"keyFileRoots":["/etc/tenant-keys/"],"kubernetesIdentity":"containerd",
          "kubernetesIdentityIncludesPodUid":true})",
      "p");
  EXPECT_EQ(p.key_file_roots, std::vector<std::string>{"/etc/tenant-keys"});
  EXPECT_TRUE(p.kubernetes_pod_uid);
  const Policy d = parse_policy("{}", "p");
  EXPECT_TRUE(d.key_file_roots.empty());
  EXPECT_FALSE(d.kubernetes_pod_uid);
  expect_error([] { parse_policy(R"({"keyFileRoots":["keys"]})", "p"); },
               {"keyFileRoots", "not an absolute path"});
  expect_error([] { parse_policy(R"({"keyFileRoots":"/k"})", "p"); },
               {"\"keyFileRoots\" is not an array"});
  expect_error([] { parse_policy(R"({"kubernetesIdentityIncludesPodUid":"yes"})", "p"); },
               {"\"kubernetesIdentityIncludesPodUid\" is not a boolean"});
  expect_error([] { parse_policy(R"({"kubernetesIdentityIncludesPodUid":true})", "p"); },
               {"\"kubernetesIdentityIncludesPodUid\" needs \"kubernetesIdentity\""});
}

// ---- roots that would open the hook's own directories to annotations (issue 18, hole 5) ----

const HookDirs kDirs{kRoot, "/run/vtpm-hook", {kRoot + "/ca", "/etc/vtpm-ca"}};

TEST(PolicyRoots, RootsOverlappingTheHooksDirectoriesAreRefused) {
  for (const auto& [json, want] : std::vector<std::pair<std::string, std::string>>{
           {R"({"statePathRoots":["/var/lib"]})",
            "\"statePathRoots\" entry /var/lib contains the state root /var/lib/vtpm-hook"},
           {R"({"statePathRoots":["/srv","/var/lib/vtpm-hook"]})",
            "entry /var/lib/vtpm-hook is the state root"},
           {R"({"statePathRoots":["/var/lib/vtpm-hook/tenants"]})",
            "entry /var/lib/vtpm-hook/tenants lies in the state root"},
           {R"({"statePathRoots":["/run"]})", "entry /run contains the run root /run/vtpm-hook"},
           {R"({"statePathRoots":["/etc"]})",
            "entry /etc contains the CA's directory /etc/vtpm-ca"},
           {R"({"keyFileRoots":["/var"]})", "\"keyFileRoots\" entry /var contains the state root"},
           {R"({"keyFileRoots":["/etc/vtpm-ca/keys"]})",
            "entry /etc/vtpm-ca/keys lies in the CA's directory"}}) {
    const Policy p = parse_policy(json, "p");
    expect_error(
        [&] { check_policy_roots(p, kDirs, "policy file /etc/vtpm-hook/policy.json"); },
        {"policy file /etc/vtpm-hook/policy.json: ", want, "which no annotation may reach"});
  }
  // Roots of their own pass; so do the defaults.
  check_policy_roots(
      parse_policy(R"({"statePathRoots":["/var/lib/tpms","/srv"],"keyFileRoots":["/etc/keys"]})",
                   "p"),
      kDirs, "p");
  check_policy_roots(Policy{}, kDirs, "p");
}

TEST(PolicyRoots, ARootThatIsASymlinkToAnAncestorIsRefused) {
  const auto dir = vtpm::testing::test_dir("policy-roots");
  std::filesystem::create_directories(dir / "lib" / "vtpm-hook");
  std::filesystem::create_directories(dir / "srv");
  std::filesystem::create_directory_symlink(dir / "lib", dir / "srv" / "tpms");
  Policy p;
  p.state_path_roots = {(dir / "srv" / "tpms").string()};
  const HookDirs dirs{(dir / "lib" / "vtpm-hook").string(), (dir / "run").string(), {}};
  expect_error([&] { check_policy_roots(p, dirs, "p"); },
               {"contains the state root", "through symlinks"});
  p.state_path_roots = {(dir / "srv").string()};
  check_policy_roots(p, dirs, "p");
  std::filesystem::remove_all(dir);
}

class PolicyFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("vtpm-policy-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    file_ = dir_ / "policy.json";
    std::ofstream(file_) << R"({"statePathRoots":["/srv/tpms"]})";
    ::chmod(file_.c_str(), 0644);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_, file_;
};

TEST_F(PolicyFile, LoadsARootOwnedFile) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (the file must be root's)";
  EXPECT_EQ(load_policy(file_, true).state_path_roots, (std::vector<std::string>{"/srv/tpms"}));
}

TEST_F(PolicyFile, MissingIsDefaultsUnlessNamed) {
  EXPECT_TRUE(load_policy(dir_ / "none.json", false).state_path_roots.empty());
  expect_error([&] { load_policy(dir_ / "none.json", true); }, {"none.json"});
}

TEST_F(PolicyFile, WritableByOthersIsRefused) {
  ::chmod(file_.c_str(), 0664);
  expect_error([&] { load_policy(file_, false); }, {"writable by group or others"});
}

TEST_F(PolicyFile, NotRootsIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  ASSERT_EQ(::chown(file_.c_str(), 1000, 1000), 0);
  expect_error([&] { load_policy(file_, false); }, {"not owned by root"});
}

TEST_F(PolicyFile, SymlinkOrFifoIsRefused) {
  std::filesystem::create_symlink(file_, dir_ / "link.json");
  expect_error([&] { load_policy(dir_ / "link.json", true); }, {"link.json"});
  ASSERT_EQ(::mkfifo((dir_ / "fifo.json").c_str(), 0644), 0);
  expect_error([&] { load_policy(dir_ / "fifo.json", true); }, {"not a regular file"});
}

// ---- annotations: the workload author's ----

TEST(AnnotationPolicy, HarmlessFieldsAreAllowedByDefault) {
  const auto specs = resolve_vtpms(state_with({{"io.vtpm-hook.vtpm", "2"},
                                               {"io.vtpm-hook.pcr-banks", "sha256"},
                                               {"io.vtpm-hook.create-certs", "true"}}),
                                   config(), defaults());
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].state_path, kRoot + "/c1");
  EXPECT_TRUE(specs[0].create_certs);
}

TEST(AnnotationPolicy, HostFieldsAreRefusedByDefault) {
  for (const auto& [name, value, field] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"io.vtpm-hook.state-path", "/etc", "statePath"},
           {"io.vtpm-hook.state-path-is-managed", "true", "statePathIsManaged"},
           {"io.vtpm-hook.run-as", "1000", "runAs"}}) {
    const auto st = state_with({{"io.vtpm-hook.vtpm", "2"}, {name, value}});
    expect_error([&] { resolve_vtpms(st, config(), defaults()); },
                 {"\"" + field + "\" may not come from an annotation", "annotationFields"});
  }
}

TEST(AnnotationPolicy, VtpmsAnnotationObeysTheSameRules) {
  for (const char* entry :
       {R"({"statePath":"/var/lib/vtpm-hook/other"})", R"({"encryptionKeyFile":"/etc/shadow"})",
        R"({"encryptionPasswordFile":"/dev/zero"})", R"({"runAs":"0"})"}) {
    const auto st = state_with({{"io.vtpm-hook.vtpms", std::string("[") + entry + "]"}});
    expect_error([&] { resolve_vtpms(st, config(), defaults()); },
                 {"may not come from an annotation"});
  }
  const auto ok = resolve_vtpms(
      state_with({{"io.vtpm-hook.vtpms", R"([{"vtpmVersion":"1.2"},{"pcrBanks":"sha1"}])"}}),
      config(), defaults());
  EXPECT_EQ(ok.size(), 2u);
}

TEST(AnnotationPolicy, PlatformHierarchyNeverComesFromAnAnnotation) {
  // Not by default...
  const auto st =
      state_with({{"io.vtpm-hook.vtpms", R"([{"vtpmVersion":"2","openPlatformHierarchy":true}])"}});
  expect_error([&] { resolve_vtpms(st, config(), defaults()); },
               {"\"openPlatformHierarchy\" may not come from an annotation"});
  // ...and no policy can allow it.
  expect_error([] { parse_policy(R"({"annotationFields":["openPlatformHierarchy"]})", "p"); },
               {"may not have \"openPlatformHierarchy\""});
  // The runtime's config.json may (the administrator's choice of hook and config).
  const auto specs =
      resolve_vtpms(state_with({}), config(R"([{"openPlatformHierarchy":true}])"), defaults());
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_TRUE(specs[0].open_platform);
}

TEST(AnnotationPolicy, NarrowedPolicyRefusesEvenTheVersion) {
  Policy p;
  p.annotation_fields = {};
  expect_error(
      [&] {
        resolve_vtpms(state_with({{"io.vtpm-hook.vtpm", "2"}}), config(), defaults(p));
      },
      {"\"vtpmVersion\" may not come from an annotation", "none"});
}

TEST(AnnotationPolicy, AllowedStatePathMayOnlyUseTheExtraRoots) {
  Policy p;
  p.annotation_fields = {"vtpmVersion", "statePath"};
  p.state_path_roots = {"/srv/tpms"};
  const auto specs = resolve_vtpms(
      state_with({{"io.vtpm-hook.vtpm", "2"}, {"io.vtpm-hook.state-path", "/srv/tpms/a"}}),
      config(), defaults(p));
  EXPECT_EQ(specs[0].state_path, "/srv/tpms/a");
  EXPECT_EQ(specs[0].state_root, "/srv/tpms");
  // Another tenant's default state, and the state root itself, stay out of reach.
  for (const std::string& path :
       std::vector<std::string>{kRoot + "/other", kRoot, "/etc", "/srv/tpms", "/srv/tpms/../x"})
    expect_error(
        [&] {
          resolve_vtpms(state_with({{"io.vtpm-hook.vtpm", "2"}, {"io.vtpm-hook.state-path", path}}),
                        config(), defaults(p));
        },
        {"not under an allowed state root"});
}

TEST(AnnotationPolicy, ConfigJsonAnnotationsAreTheWorkloadsToo) {
  BundleConfig cfg = config();
  cfg.annotations = {{"io.vtpm-hook.vtpm", "2"}, {"io.vtpm-hook.state-path", "/tmp/x"}};
  expect_error([&] { resolve_vtpms(state_with({}), cfg, defaults()); },
               {"may not come from an annotation"});
}

// ---- linux.vtpms: the runtime's, confined to the allowed roots ----

TEST(StatePathPolicy, ConfigMayUseTheStateRootAndTheExtraRoots) {
  Policy p;
  p.state_path_roots = {"/srv/tpms"};
  const auto specs = resolve_vtpms(
      state_with({}),
      config(R"([{"statePath":"/srv/tpms/web"},{"statePath":"/var/lib/vtpm-hook/x/y"}])"),
      defaults(p));
  EXPECT_EQ(specs[0].state_root, "/srv/tpms");
  EXPECT_EQ(specs[1].state_root, kRoot);
}

TEST(StatePathPolicy, OutsideTheRootsIsRefused) {
  for (const char* path : {"/etc", "/var/lib/vtpm-hook", "/var/lib/vtpm-hook/../../../etc",
                           "/var/lib/vtpm-hookx/a", "/var/lib"})
    expect_error(
        [&] {
          resolve_vtpms(state_with({}), config(std::string(R"([{"statePath":")") + path + R"("}])"),
                        defaults());
        },
        {"not under an allowed state root"});
}

TEST(StatePathPolicy, TheCaDirectoryIsNobodysState) {
  for (const std::string& path : std::vector<std::string>{kRoot + "/ca", kRoot + "/ca/x"})
    expect_error(
        [&] {
          resolve_vtpms(state_with({}), config(R"([{"statePath":")" + path + R"("}])"), defaults());
        },
        {"keeps for itself"});
  expect_error([&] { resolve_vtpms(state_with({}, "ca"), config(), defaults()); },
               {"container id \"ca\"", "statePath"});
}

TEST(StatePathPolicy, ControlCharactersAreRefused) {
  expect_error(
      [&] {
        resolve_vtpms(state_with({}), config(R"([{"statePath":"/var/lib/vtpm-hook/a\nb"}])"),
                      defaults());
      },
      {"control character"});
  expect_error(
      [&] { resolve_vtpms(state_with({}), config(R"([{"runAs":"a\u001b[31m"}])"), defaults()); },
      {"control character"});
}

TEST(StatePathPolicy, LaterEntriesSitBesideTheFirst) {
  const auto specs = resolve_vtpms(state_with({}), config("[{},{}]"), defaults());
  EXPECT_EQ(specs[0].state_path, kRoot + "/c1");
  EXPECT_EQ(specs[1].state_path, kRoot + "/c1@tpm1");
}

// ---- Kubernetes identity: a restarted container (new id) keeps its pod's TPM ----

namespace k8s {

const std::map<std::string, std::string> kContainerd = {
    {"io.kubernetes.cri.sandbox-namespace", "shop"},
    {"io.kubernetes.cri.sandbox-name", "db-0"},
    {"io.kubernetes.cri.container-name", "postgres"},
    {"io.kubernetes.cri.container-type", "container"}};
const std::map<std::string, std::string> kCrio = {{"io.kubernetes.pod.namespace", "shop"},
                                                  {"io.kubernetes.pod.name", "db-0"},
                                                  {"io.kubernetes.container.name", "postgres"}};

Policy with(KubernetesIdentity k) {
  Policy p;
  p.kubernetes_identity = k;
  return p;
}

std::string path_of(const std::map<std::string, std::string>& ann, KubernetesIdentity k,
                    const std::string& id = "c1", const std::string& vtpms = "") {
  const auto specs = resolve_vtpms(state_with(ann, id), config(vtpms), defaults(with(k)));
  return specs.empty() ? "" : specs[0].state_path;
}

}  // namespace k8s

TEST(KubernetesIdentity, PolicyNamesTheRuntime) {
  EXPECT_EQ(parse_policy("{}", "p").kubernetes_identity, KubernetesIdentity::Off);
  EXPECT_EQ(parse_policy(R"({"kubernetesIdentity":"containerd"})", "p").kubernetes_identity,
            KubernetesIdentity::Containerd);
  EXPECT_EQ(parse_policy(R"({"kubernetesIdentity":"cri-o"})", "p").kubernetes_identity,
            KubernetesIdentity::CriO);
  expect_error([] { parse_policy(R"({"kubernetesIdentity":true})", "p"); },
               {"\"kubernetesIdentity\" must be"});
}

TEST(KubernetesIdentity, SameNamespacePodContainerSameStateAcrossIds) {
  using namespace k8s;
  const std::string want = kRoot + "/kubernetes/shop_db-0_postgres";
  EXPECT_EQ(path_of(kContainerd, KubernetesIdentity::Containerd, "id-1"), want);
  EXPECT_EQ(path_of(kContainerd, KubernetesIdentity::Containerd, "id-2"), want);
  EXPECT_EQ(path_of(kCrio, KubernetesIdentity::CriO, "id-3"), want);
  auto other = kContainerd;
  other["io.kubernetes.cri.sandbox-name"] = "db-1";
  EXPECT_EQ(path_of(other, KubernetesIdentity::Containerd),
            kRoot + "/kubernetes/shop_db-1_postgres");
  // linux.vtpms entries without a statePath use the key too; later ones sit beside it
  const auto specs = resolve_vtpms(state_with(kContainerd), config(R"([{}, {}])"),
                                   defaults(with(KubernetesIdentity::Containerd)));
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[1].state_path, want + "@tpm1");
}

TEST(KubernetesIdentity, OnlyTheNamedRuntimesAnnotationsCount) {
  using namespace k8s;
  // Off, or another runtime's annotations (which a pod may pass through): the container id.
  EXPECT_EQ(path_of(kContainerd, KubernetesIdentity::Off), kRoot + "/c1");
  EXPECT_EQ(path_of(kCrio, KubernetesIdentity::Containerd), kRoot + "/c1");
  EXPECT_EQ(path_of(kContainerd, KubernetesIdentity::CriO), kRoot + "/c1");
  auto partial = kContainerd;
  partial.erase("io.kubernetes.cri.container-name");
  EXPECT_EQ(path_of(partial, KubernetesIdentity::Containerd), kRoot + "/c1");
}

TEST(KubernetesIdentity, ThePauseContainerGetsNoTpm) {
  using namespace k8s;
  auto sandbox = kContainerd;
  sandbox["io.kubernetes.cri.container-type"] = "sandbox";
  EXPECT_TRUE(
      resolve_vtpms(state_with(sandbox), config(), defaults(with(KubernetesIdentity::Containerd)))
          .empty());
  auto pod = kCrio;
  pod["io.kubernetes.container.name"] = "POD";
  EXPECT_TRUE(
      resolve_vtpms(state_with(pod), config(), defaults(with(KubernetesIdentity::CriO))).empty());
}

TEST(KubernetesIdentity, NamesThatAreNotKubernetesNamesAreRefused) {
  using namespace k8s;
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"io.kubernetes.cri.sandbox-namespace", "../etc"},
           {"io.kubernetes.cri.sandbox-namespace", "a.b"},  // a label: no dots
           {"io.kubernetes.cri.sandbox-name", "x_y"},       // '_' would make keys ambiguous
           {"io.kubernetes.cri.container-name", "Upper"},
           {"io.kubernetes.cri.container-name", ""},
           {"io.kubernetes.cri.sandbox-name", std::string(254, 'a')}}) {
    auto ann = kContainerd;
    ann[key] = value;
    expect_error([&] { path_of(ann, KubernetesIdentity::Containerd); },
                 {"annotation " + key, "not a Kubernetes name"});
  }
  EXPECT_EQ(path_of(
                [] {
                  auto a = kContainerd;
                  a["io.kubernetes.cri.sandbox-name"] = "web-7c9f.example";
                  return a;
                }(),
                KubernetesIdentity::Containerd),
            kRoot + "/kubernetes/shop_web-7c9f.example_postgres");
}

// Names up to 63+253+63 characters: a directory name longer than NAME_MAX (255) is hashed;
// every name that fitted keeps its directory, so no TPM is lost on upgrade.
TEST(KubernetesIdentity, LongNamesAreHashedShortOnesKept) {
  using namespace k8s;
  const auto with_names = [](const std::string& ns, const std::string& pod, const std::string& c) {
    auto a = kContainerd;
    a["io.kubernetes.cri.sandbox-namespace"] = ns;
    a["io.kubernetes.cri.sandbox-name"] = pod;
    a["io.kubernetes.cri.container-name"] = c;
    return a;
  };
  const std::string ns(63, 'n'), pod(253, 'p'), c(63, 'c');
  const std::string full = ns + "_" + pod + "_" + c;  // 381 characters
  const auto specs = resolve_vtpms(state_with(with_names(ns, pod, c)), config("[{},{}]"),
                                   defaults(with(KubernetesIdentity::Containerd)));
  ASSERT_EQ(specs.size(), 2u);
  const std::string dir = kRoot + "/kubernetes/";
  ASSERT_EQ(specs[0].state_path.substr(0, dir.size()), dir);
  const std::string name = specs[0].state_path.substr(dir.size());
  // <first 128 characters>+<SHA-256 hex of the whole name>
  EXPECT_EQ(name, full.substr(0, 128) + "+" +
                      "07d11aac2a473a26a8dde60e593be626ff1243691b03d6651813c28c05927500");
  EXPECT_LE(name.size(), 255u);
  EXPECT_EQ(specs[1].state_path, specs[0].state_path + "@tpm1");
  // Stable across container ids; another name (same first 128 characters) another directory.
  EXPECT_EQ(path_of(with_names(ns, pod, c), KubernetesIdentity::Containerd, "id-2"),
            specs[0].state_path);
  EXPECT_NE(
      path_of(with_names(ns, pod, std::string(62, 'c') + "d"), KubernetesIdentity::Containerd),
      specs[0].state_path);
  // At the limit: a 255-character name is kept as it is for its first TPM (it worked before);
  // its second TPM's "@tpm1" would not fit, so that one is hashed.
  const std::string pod2(255 - 2 - 63 - 63, 'p');
  const auto at_limit = resolve_vtpms(state_with(with_names(ns, pod2, c)), config("[{},{}]"),
                                      defaults(with(KubernetesIdentity::Containerd)));
  EXPECT_EQ(at_limit[0].state_path, dir + ns + "_" + pod2 + "_" + c);
  EXPECT_NE(at_limit[1].state_path.find("+"), std::string::npos);
  EXPECT_EQ(at_limit[1].state_path.substr(at_limit[1].state_path.size() - 5), "@tpm1");
  EXPECT_LE(at_limit[1].state_path.size() - dir.size(), 255u);
}

TEST(KubernetesIdentity, PodUidInTheKeyWhenThePolicySaysSo) {
  using namespace k8s;
  Policy p = with(KubernetesIdentity::Containerd);
  p.kubernetes_pod_uid = true;
  const std::string uid = "5f0c8a2e-2f4b-4c1e-9f3a-0d6e7b8c9a10";
  auto ann = kContainerd;
  ann["io.kubernetes.cri.sandbox-uid"] = uid;
  const auto path = [&](const std::map<std::string, std::string>& a, const Policy& pol) {
    return resolve_vtpms(state_with(a), config(), defaults(pol)).at(0).state_path;
  };
  EXPECT_EQ(path(ann, p), kRoot + "/kubernetes/shop_db-0_postgres_" + uid);
  // A new pod of the same name (another UID) gets another TPM...
  auto again = ann;
  again["io.kubernetes.cri.sandbox-uid"] = "0b6f2d4c-1111-4222-8333-944455566677";
  EXPECT_NE(path(again, p), path(ann, p));
  // ...and without the option the name alone is the key (a StatefulSet keeps its TPM).
  EXPECT_EQ(path(ann, with(KubernetesIdentity::Containerd)),
            kRoot + "/kubernetes/shop_db-0_postgres");
  // CRI-O: the kubelet's label; a static pod's UID is 32 hex digits.
  Policy crio = with(KubernetesIdentity::CriO);
  crio.kubernetes_pod_uid = true;
  auto c = kCrio;
  c["io.kubernetes.pod.uid"] = "0123456789abcdef0123456789abcdef";
  EXPECT_EQ(path(c, crio),
            kRoot + "/kubernetes/shop_db-0_postgres_0123456789abcdef0123456789abcdef");
  // Missing or malformed: the container does not start.
  expect_error(
      [&] { path(kContainerd, p); },
      {"annotation io.kubernetes.cri.sandbox-uid is missing", "kubernetesIdentityIncludesPodUid"});
  for (const char* bad : {"../x", "A-B", "a_b", ""}) {
    auto b = ann;
    b["io.kubernetes.cri.sandbox-uid"] = bad;
    expect_error([&] { path(b, p); }, {"annotation io.kubernetes.cri.sandbox-uid"});
  }
}

TEST(KubernetesIdentity, NoContainerIdTakesTheirDirectory) {
  expect_error([] { resolve_vtpms(state_with({}, "kubernetes"), config(), defaults()); },
               {"kubernetes", "keeps for itself"});
}

}  // namespace
}  // namespace vtpm
