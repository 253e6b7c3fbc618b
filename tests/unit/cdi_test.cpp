// `vtpm-hook cdi`: the spec podman 4.3 (CDI library v0.5.x) and later engines accept, whose
// devices carry the administrator's hook command lines; and the CDI rules the checker enforces.
#include "hook/cdi.h"

#include <gtest/gtest.h>

#include "error_matchers.h"

namespace vtpm {
namespace {

using nlohmann::json;
using vtpm::testing::expect_error;

CdiOptions options(const Policy& p = {}) {
  CdiOptions o;
  o.hook_path = "/usr/local/bin/vtpm-hook";
  o.global_args = {"--state-root", "/srv/tpm", "--log-file", "/var/log/vtpm-hook.log"};
  o.devices = cdi_devices(p);
  return o;
}

const json& device(const json& spec, const std::string& name) {
  for (const auto& d : spec["devices"])
    if (d["name"] == name) return d;
  throw std::runtime_error("no device " + name);
}

json hook_of(const json& dev, const std::string& stage) {
  for (const auto& h : dev["containerEdits"]["hooks"])
    if (h["hookName"] == stage) return h;
  return nullptr;
}

TEST(Cdi, BuiltInDevicesCarrySetupAndTeardown) {
  const json spec = make_cdi_spec(options());
  EXPECT_EQ(spec["cdiVersion"], "0.5.0");
  EXPECT_EQ(spec["kind"], "vtpm-hook.io/tpm");
  ASSERT_EQ(spec["devices"].size(), 2u);
  for (const auto& [name, version] : {std::pair{"2", "2"}, {"1.2", "1.2"}}) {
    const json& d = device(spec, name);
    ASSERT_EQ(d["containerEdits"]["hooks"].size(), 2u) << name;
    const json setup = hook_of(d, "createRuntime"), teardown = hook_of(d, "poststop");
    EXPECT_EQ(setup["path"], "/usr/local/bin/vtpm-hook");
    EXPECT_EQ(setup["args"],
              json({"vtpm-hook", "--state-root", "/srv/tpm", "--log-file", "/var/log/vtpm-hook.log",
                    "setup", "--default-version", version}));
    EXPECT_EQ(teardown["path"], "/usr/local/bin/vtpm-hook");
    EXPECT_EQ(teardown["args"], json({"vtpm-hook", "--state-root", "/srv/tpm", "--log-file",
                                      "/var/log/vtpm-hook.log", "teardown"}));
  }
  // exactly the fields of 0.5.0 (podman 4.3 decodes strictly)
  EXPECT_EQ(spec.size(), 3u);
  EXPECT_EQ(device(spec, "2").size(), 2u);
  EXPECT_EQ(device(spec, "2")["containerEdits"].size(), 1u);
}

TEST(Cdi, PolicyDevicesAndSetupOptions) {
  const Policy p = parse_policy(R"({"cdiDevices": {
      "2-certs": {"vtpmVersion": "2", "createCerts": true, "pcrBanks": "sha256,sha384"},
      "legacy": {"vtpmVersion": "1.2"}}})",
                                "policy");
  CdiOptions o = options(p);
  o.setup_args = {"--no-device-cgroup"};
  const json spec = make_cdi_spec(o);
  ASSERT_EQ(spec["devices"].size(), 4u);
  EXPECT_EQ(spec["devices"][2]["name"], "2-certs");
  const json args = hook_of(device(spec, "2-certs"), "createRuntime")["args"];
  const std::vector<std::string> tail(args.end() - 7, args.end());
  EXPECT_EQ(tail, (std::vector<std::string>{"setup", "--default-version", "2",
                                            "--default-pcr-banks", "sha256,sha384",
                                            "--default-create-certs", "--no-device-cgroup"}));
  EXPECT_EQ(hook_of(device(spec, "legacy"), "createRuntime")["args"].back(), "--no-device-cgroup");
}

TEST(Cdi, PolicyDevicesAreChecked) {
  expect_error([] { parse_policy(R"({"cdiDevices": {"x": {"vtpmVersion": "3"}}})", "p"); },
               {"cdiDevices \"x\"", "vtpmVersion"});
  expect_error([] { parse_policy(R"({"cdiDevices": {"x": {"statePath": "/etc"}}})", "p"); },
               {"unknown field \"statePath\""});
  expect_error(
      [] {
        parse_policy(R"({"cdiDevices": {"x": {"vtpmVersion": "1.2", "createCerts": true}}})", "p");
      },
      {"need vtpmVersion \"2\""});
  expect_error([] { parse_policy(R"({"cdiDevices": []})", "p"); }, {"not an object"});
  expect_error([] { cdi_devices(parse_policy(R"({"cdiDevices": {"1.2": {}}})", "p")); },
               {"built-in"});
  // names CDI refuses
  for (const char* bad : {"-x", "x-", "a/b", "a b", "é"}) {
    Policy p;
    p.cdi_devices[bad] = {};
    expect_error([&] { make_cdi_spec(options(p)); }, {"invalid device name"});
  }
}

// The checker itself, on hand-made specs: what the schema and the v0.5 library reject.
TEST(Cdi, ValidatorRejectsWhatCdiRejects) {
  const json good = make_cdi_spec(options());
  EXPECT_NO_THROW(validate_cdi_spec(good));
  auto with = [&](auto edit) {
    json s = good;
    edit(s);
    return s;
  };
  const std::vector<std::pair<json, std::string>> bad = {
      {with([](json& s) { s.erase("cdiVersion"); }), "no \"cdiVersion\""},
      {with([](json& s) { s["cdiVersion"] = "0.6.0"; }), "not one podman 4.3 reads"},
      {with([](json& s) { s["cdiVersion"] = "0.4.0"; }), "starts with a digit"},
      {with([](json& s) { s["kind"] = "tpm"; }), "not vendor/class"},
      {with([](json& s) { s["kind"] = "vtpm-hook.io/tp.m"; }), "invalid class"},
      {with([](json& s) { s["kind"] = "1vendor/tpm"; }), "invalid vendor"},
      {with([](json& s) { s["devices"] = json::array(); }), "no devices"},
      {with([](json& s) { s.erase("devices"); }), "\"devices\""},
      {with([](json& s) { s["annotations"] = json::object(); }), "unknown field \"annotations\""},
      {with([](json& s) { s["devices"][1]["name"] = "2"; }), "appears twice"},
      {with([](json& s) { s["devices"][0].erase("containerEdits"); }), "no containerEdits"},
      {with([](json& s) { s["devices"][0]["containerEdits"] = json::object(); }),
       "empty containerEdits"},
      {with([](json& s) { s["devices"][0]["containerEdits"]["hooks"] = json::array(); }),
       "empty containerEdits"},
      {with([](json& s) { s["devices"][0]["containerEdits"]["hooks"][0]["hookName"] = "prestop"; }),
       "invalid hook name"},
      {with([](json& s) { s["devices"][0]["containerEdits"]["hooks"][0]["path"] = "vtpm-hook"; }),
       "not absolute"},
      {with([](json& s) { s["devices"][0]["containerEdits"]["hooks"][0].erase("path"); }),
       "no \"path\""},
      {with([](json& s) { s["devices"][0]["containerEdits"]["hooks"][0]["args"] = {1}; }),
       "non-string"},
      {with([](json& s) { s["devices"][0]["containerEdits"]["hooks"][0]["env"] = {"=x"}; }),
       "invalid environment"},
      {with([](json& s) { s["devices"][0]["containerEdits"]["hooks"][0]["timeout"] = -1; }),
       "uint32"},
      {with([](json& s) { s["devices"][0]["containerEdits"]["env"] = {"NOEQUALS"}; }),
       "invalid environment"},
      {with([](json& s) { s["devices"][0]["containerEdits"]["cdiVersion"] = 1; }), "unknown field"},
      {with([](json& s) {
         s["devices"][0]["containerEdits"]["mounts"] = {{{"hostPath", "/a"}}};
       }),
       "no \"containerPath\""},
  };
  for (const auto& [spec, needle] : bad) expect_error([&] { validate_cdi_spec(spec); }, {needle});
  // a device whose only edit is an env entry is fine; so is an empty spec-level edit
  EXPECT_NO_THROW(validate_cdi_spec(with([](json& s) {
    s["devices"][0]["containerEdits"] = {{"env", {"A=1"}}};
    s["containerEdits"] = json::object();
  })));
}

}  // namespace
}  // namespace vtpm
