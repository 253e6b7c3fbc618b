// vtpm-runc: reading runc's command line and adding the hooks to config.json.
#include "hook/runtime_wrapper.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "error_matchers.h"
#include "oci/policy.h"
#include "oci/vtpm_request.h"

namespace vtpm {
namespace {

using vtpm::testing::expect_error;
using Json = nlohmann::ordered_json;

RuntimeArgs parse(std::vector<std::string> args) { return parse_runtime_args(args, "/cwd"); }

// ---- the command line ----

TEST(WrapperArgs, ContainerdShimCreate) {
  const auto rt = parse({"--root", "/run/containerd/runc/default", "--log", "/b/log.json",
                         "--log-format", "json", "--systemd-cgroup", "create", "--bundle", "/b",
                         "--pid-file", "/b/init.pid", "c1"});
  EXPECT_EQ(rt.command, "create");
  EXPECT_EQ(rt.bundle, "/b");
  EXPECT_EQ(rt.log_file, "/b/log.json");
  EXPECT_EQ(rt.log_format, "json");
  EXPECT_TRUE(rt.edits);
}

TEST(WrapperArgs, BundleForms) {
  EXPECT_EQ(parse({"run", "--bundle=/x", "c1"}).bundle, "/x");
  EXPECT_EQ(parse({"run", "-b", "/x", "c1"}).bundle, "/x");
  EXPECT_EQ(parse({"run", "-b=/x", "c1"}).bundle, "/x");
  EXPECT_EQ(parse({"run", "-bundle", "/x", "c1"}).bundle, "/x");
  EXPECT_EQ(parse({"run", "-b", "rel/dir", "c1"}).bundle, "/cwd/rel/dir");
  EXPECT_EQ(parse({"run", "c1"}).bundle, "/cwd");  // runc's default: the working directory
  EXPECT_EQ(parse({"run", "--bundle=", "c1"}).bundle, "/cwd");
  // urfave/cli reorders: options after the id count
  EXPECT_EQ(parse({"create", "c1", "--bundle", "/late"}).bundle, "/late");
  // the last one wins, as with Go's flag package
  EXPECT_EQ(parse({"create", "-b", "/a", "--bundle", "/b", "c1"}).bundle, "/b");
}

TEST(WrapperArgs, GlobalOptionsWithAndWithoutValues) {
  const auto rt = parse({"--debug", "--root=/r", "-log", "/l", "--rootless", "false", "--criu",
                         "/c", "--log-format=text", "--systemd-cgroup=true", "run", "-d",
                         "--pid-file", "-b", "--console-socket", "/s", "c1"});
  EXPECT_EQ(rt.command, "run");
  EXPECT_EQ(rt.log_file, "/l");
  EXPECT_EQ(rt.log_format, "text");
  // "-b" was --pid-file's value, not the bundle option
  EXPECT_EQ(rt.bundle, "/cwd");
  EXPECT_TRUE(rt.edits);
}

TEST(WrapperArgs, EverythingElsePassesThrough) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"--version"},
                                                                {"-v"},
                                                                {},
                                                                {"--root", "/r", "state", "c1"},
                                                                {"list", "--format", "json"},
                                                                {"kill", "c1", "KILL"},
                                                                {"delete", "--force", "c1"},
                                                                {"exec", "--tty", "c1", "sh"},
                                                                {"--help", "run", "c1"},
                                                                {"run", "--help"},
                                                                {"create", "-h"}}) {
    const auto rt = parse(args);
    EXPECT_FALSE(rt.edits) << (args.empty() ? "" : args[0]);
  }
  EXPECT_EQ(parse({"--root", "/r", "state", "c1"}).command, "state");
  EXPECT_EQ(parse({"--", "state"}).command, "state");
}

TEST(WrapperArgs, UnknownOptionsAreErrors) {
  expect_error(
      [] {
        parse({"--frobnicate", "run", "c1"});
      },
      {"unknown global option --frobnicate"});
  expect_error(
      [] {
        parse({"run", "--config", "/x.json", "c1"});
      },
      {"unknown option --config of 'run'"});
  expect_error([] { parse({"create", "-bX", "c1"}); }, {"unknown option -bX"});
  expect_error([] { parse({"--root"}); }, {"--root needs a value"});
  expect_error([] { parse({"create", "c1", "--bundle"}); }, {"--bundle needs a value"});
}

// ---- config.json ----

WrapperHooks hooks() {
  WrapperHooks h;
  h.path = "/usr/local/bin/vtpm-hook";
  h.hook_args = {"--state-root", "/srv/tpm"};
  return h;
}

const char* kConfig = R"({"ociVersion":"1.0.2","process":{"args":["sh"],"env":["PATH=/bin"]},
  "root":{"path":"rootfs"},"hooks":{"prestart":[{"path":"/usr/bin/other","args":["other"]}]},
  "annotations":{"a":"b"},"linux":{"namespaces":[{"type":"pid"}]}})";

Json edit(const std::string& text) {
  const auto out = add_hooks_to_config(text, hooks());
  EXPECT_TRUE(out.has_value());
  return out ? Json::parse(*out) : Json();
}

TEST(WrapperConfig, AddsTheHooksAndKeepsEverythingElse) {
  const Json out = edit(kConfig);
  Json want = Json::parse(kConfig);
  want["hooks"]["createRuntime"] = Json::parse(
      R"([{"path":"/usr/local/bin/vtpm-hook","args":["vtpm-hook","--state-root","/srv/tpm","setup"]}])");
  want["hooks"]["poststop"] = Json::parse(
      R"([{"path":"/usr/local/bin/vtpm-hook","args":["vtpm-hook","--state-root","/srv/tpm","teardown"]}])");
  EXPECT_EQ(out, want);
  // key order too
  std::vector<std::string> keys;
  for (const auto& [k, v] : out.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"ociVersion", "process", "root", "hooks", "annotations",
                                            "linux"}));
}

TEST(WrapperConfig, NeverTwice) {
  const auto once = add_hooks_to_config(kConfig, hooks());
  ASSERT_TRUE(once);
  EXPECT_FALSE(add_hooks_to_config(*once, hooks()));
  // a hook of this executable in any stage counts, whatever its arguments
  EXPECT_FALSE(add_hooks_to_config(
      R"({"hooks":{"prestart":[{"path":"/usr/local/bin/vtpm-hook","args":["vtpm-hook","setup"]}]}})",
      hooks()));
  // the same file under another name (the is_self test the wrapper gives: same inode)
  auto h = hooks();
  h.is_self = [](const std::string& p) { return p == "/opt/link-to-vtpm-hook"; };
  EXPECT_FALSE(
      add_hooks_to_config(R"({"hooks":{"poststop":[{"path":"/opt/link-to-vtpm-hook"}]}})", h));
}

TEST(WrapperConfig, MinimalConfig) {
  const Json out = edit("{}");
  EXPECT_EQ(out["hooks"]["createRuntime"].size(), 1u);
  EXPECT_EQ(out["hooks"]["poststop"].size(), 1u);
  EXPECT_FALSE(out.contains("annotations"));
}

std::string with_env(const std::string& value) {
  return R"({"process":{"env":["PATH=/bin",")" + std::string(kVtpmEnv) + "=" + value + R"("]}})";
}

TEST(WrapperConfig, NoneGetsNoHooks) {
  EXPECT_FALSE(add_hooks_to_config(R"({"annotations":{"io.vtpm-hook.vtpm":"none"}})", hooks()));
  EXPECT_FALSE(add_hooks_to_config(with_env("none"), hooks()));
  // Kubernetes pod sandboxes (pause containers), as containerd's and CRI-O's CRI mark them
  EXPECT_FALSE(add_hooks_to_config(
      R"({"annotations":{"io.kubernetes.cri.container-type":"sandbox"}})", hooks()));
  EXPECT_FALSE(add_hooks_to_config(
      R"({"annotations":{"io.kubernetes.cri-o.ContainerType":"sandbox"}})", hooks()));
  EXPECT_TRUE(add_hooks_to_config(
      R"({"annotations":{"io.kubernetes.cri.container-type":"container"}})", hooks()));
}

TEST(WrapperConfig, EnvironmentChoosesTheVersion) {
  const Json v12 = edit(with_env("1.2"));
  EXPECT_EQ(v12["annotations"][kAnnotationVtpm], "1.2");
  EXPECT_EQ(v12["hooks"]["createRuntime"].size(), 1u);
  const Json v2 = edit(with_env("2"));
  EXPECT_FALSE(v2.contains("annotations"));
  EXPECT_EQ(v2["hooks"]["createRuntime"].size(), 1u);
}

TEST(WrapperConfig, AnnotationsAndLinuxVtpmsWinOverTheEnvironment) {
  // an annotation decides (the hook checks it); the environment adds nothing
  const Json a = edit(R"({"annotations":{"io.vtpm-hook.vtpm":"2"},"process":{"env":[")" +
                      std::string(kVtpmEnv) + R"(=none"]}})");
  EXPECT_EQ(a["annotations"][kAnnotationVtpm], "2");
  EXPECT_EQ(a["hooks"]["createRuntime"].size(), 1u);
  const Json a12 = edit(R"({"annotations":{"io.vtpm-hook.vtpm":"1.2"}})");
  EXPECT_EQ(a12["annotations"][kAnnotationVtpm], "1.2");
  const Json l = edit(R"({"linux":{"vtpms":[{"vtpmVersion":"2"}]},"process":{"env":[")" +
                      std::string(kVtpmEnv) + R"(=1.2"]}})");
  EXPECT_FALSE(l.contains("annotations"));
  EXPECT_EQ(l["hooks"]["poststop"].size(), 1u);
}

TEST(WrapperConfig, Errors) {
  expect_error([] { add_hooks_to_config(with_env("3"), hooks()); },
               {"VTPM_HOOK_VTPM must be 2, 1.2 or none, not \"3\""});
  expect_error([] { add_hooks_to_config("{", hooks()); }, {"config.json is not JSON"});
  expect_error([] { add_hooks_to_config("[]", hooks()); }, {"not a JSON object"});
  expect_error([] { add_hooks_to_config(R"({"hooks":[]})", hooks()); },
               {"\"hooks\" is not an object"});
  expect_error([] { add_hooks_to_config(R"({"hooks":{"poststop":{}}})", hooks()); },
               {"\"hooks.poststop\" is not an array"});
  expect_error([] { add_hooks_to_config(R"({"annotations":[]})", hooks()); },
               {"\"annotations\" is not an object"});
}

// ---- the policy keys ----

TEST(WrapperPolicy, RuntimeAndHookOptions) {
  const auto p = parse_policy(
      R"({"runtime":"/usr/bin/crun","wrapperHookOptions":{"logFile":"/var/log/v.log",
          "stateRoot":"/srv/tpm/","logLevel":"debug"}})",
      "p");
  EXPECT_EQ(p.runtime, "/usr/bin/crun");
  EXPECT_EQ(p.wrapper_hook_args,
            (std::vector<std::string>{"--state-root", "/srv/tpm", "--log-file", "/var/log/v.log",
                                      "--log-level", "debug"}));
  EXPECT_TRUE(parse_policy("{}", "p").runtime.empty());
  expect_error([] { parse_policy(R"({"runtime":"crun"})", "p"); }, {"\"runtime\""});
  expect_error([] { parse_policy(R"({"runtime":1})", "p"); }, {"\"runtime\" is not a string"});
  expect_error([] { parse_policy(R"({"wrapperHookOptions":{"policy":"/x"}})", "p"); },
               {"unknown key \"policy\""});
  expect_error([] { parse_policy(R"({"wrapperHookOptions":{"runRoot":"r"}})", "p"); }, {"runRoot"});
  expect_error([] { parse_policy(R"({"wrapperHookOptions":{"logLevel":"loud"}})", "p"); },
               {"logLevel"});
}

// ---- the hook side of "none" ----

TEST(WrapperPolicy, AnnotationNoneMeansNoTpm) {
  OciState st;
  st.id = "c1";
  BundleConfig cfg;
  cfg.annotations = {{kAnnotationVtpm, "none"}};
  const RequestDefaults d{"/var/lib/vtpm-hook", {}, {}};
  EXPECT_TRUE(resolve_vtpms(st, cfg, d).empty());
  cfg.annotations["io.vtpm-hook.pcr-banks"] = "sha256";
  expect_error([&] { resolve_vtpms(st, cfg, d); }, {"\"none\""});
}

}  // namespace
}  // namespace vtpm
