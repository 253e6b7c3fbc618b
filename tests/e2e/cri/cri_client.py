#!/usr/bin/python3
"""tests/e2e/cri/cri_client.py - a minimal CRI client: the kubelet's calls, made by a test.

    cri_client.py --socket SOCK call METHOD [JSON]    one call; the answer's JSON on stdout
    cri_client.py --socket SOCK serve                 one call per stdin line, answers on stdout

METHOD is a method of runtime.v1.RuntimeService or runtime.v1.ImageService (e.g. RunPodSandbox,
ImageStatus). A request is the proto3 JSON form of its message (field names as in api.proto);
an answer is one line, `OK <JSON>` (every field, defaults included, enums by name) or
`ERR <grpc code> <message>`. In `serve` mode each input line is `METHOD JSON`; the process keeps
one connection, so a scenario pays Python's and grpc's start-up once (under TCG that is seconds).

api.proto (beside this file: a subset of k8s.io/cri-api runtime/v1 with upstream's field
numbers) is compiled with `protoc --python_out` into a temporary directory at start; the calls
go through grpc's generic unary_unary, so no grpc code generator is needed. Needs Debian's
python3-grpcio and python3-protobuf and protoc (protobuf-compiler).
"""
import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import grpc
from google.protobuf import json_format

CALL_TIMEOUT = float(os.environ.get("CRI_CALL_TIMEOUT", "150"))   # seconds, one call


def compile_api(proto_dir):
    """api_pb2 from api.proto, built in a temporary directory (removed again at once)."""
    out = tempfile.mkdtemp(prefix="cri-api-")
    try:
        subprocess.run(["protoc", "-I", proto_dir, "--python_out", out,
                        os.path.join(proto_dir, "api.proto")], check=True)
        sys.path.insert(0, out)
        return importlib.import_module("api_pb2")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if sys.path and sys.path[0] == out:
            sys.path.pop(0)


class Client:
    def __init__(self, api, socket):
        self.api = api
        self.channel = grpc.insecure_channel("unix:" + socket)
        self.methods = {}
        for service in api.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                self.methods[m.name] = (service.full_name, m)

    def call(self, name, request_json):
        if name not in self.methods:
            return "ERR INVALID_ARGUMENT unknown method %s" % name
        service, m = self.methods[name]
        req_cls = getattr(self.api, m.input_type.name)
        resp_cls = getattr(self.api, m.output_type.name)
        try:
            req = json_format.Parse(request_json or "{}", req_cls())
        except json_format.ParseError as e:
            return "ERR INVALID_ARGUMENT request: %s" % one_line(str(e))
        stub = self.channel.unary_unary("/%s/%s" % (service, name),
                                        request_serializer=req_cls.SerializeToString,
                                        response_deserializer=resp_cls.FromString)
        try:
            resp = stub(req, timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            return "ERR %s %s" % (e.code().name, one_line(e.details() or ""))
        return "OK " + json.dumps(to_dict(resp), separators=(",", ":"))


def to_dict(msg):
    # every field, so that a test reads state CONTAINER_CREATED (0) and exit_code 0 too
    try:
        return json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                         including_default_value_fields=True)
    except TypeError:  # protobuf >= 5.26 renamed the option
        return json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)


def one_line(s):
    return " ".join(s.split())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--socket", required=True, help="containerd's socket (CRI is served there)")
    ap.add_argument("--proto-dir", default=os.path.dirname(os.path.abspath(__file__)))
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("call")
    c.add_argument("method")
    c.add_argument("json", nargs="?", default="{}")
    sub.add_parser("serve")
    a = ap.parse_args()

    client = Client(compile_api(a.proto_dir), a.socket)
    if a.cmd == "call":
        answer = client.call(a.method, a.json)
        print(answer)
        return 0 if answer.startswith("OK ") else 1
    print("READY", flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        method, _, body = line.partition(" ")
        print(client.call(method, body), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
