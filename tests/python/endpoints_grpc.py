"""The gRPC Cloud Endpoints configuration against the proto pixguard serves.

Builds the descriptor set Endpoints needs from src/protocol/inference.proto with protoc
(grpcio-tools), parses k8s/endpoints/grpc.yaml as a google.api.Service (the message gcloud turns
it into: an unknown or misspelled field fails), and checks that every API and selector it names
exists in the descriptor and that every method of the service has a usage rule. Prints a JSON
summary; exits non-zero on the first mismatch. The deploy workflow runs it to make the descriptor.
"""

import argparse
import fnmatch
import json
import os
import sys
import tempfile

import yaml
from google.api import service_pb2
from google.protobuf import descriptor_pb2, json_format
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def descriptor_set(out):
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(
        [
            "protoc",
            f"--proto_path={os.path.join(ROOT, 'src/protocol')}",
            f"--proto_path={include}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            os.path.join(ROOT, "src/protocol/inference.proto"),
        ]
    )
    if code != 0:
        sys.exit(f"protoc failed ({code})")
    fds = descriptor_pb2.FileDescriptorSet()
    with open(out, "rb") as f:
        fds.ParseFromString(f.read())
    return fds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "k8s/endpoints/grpc.yaml"))
    ap.add_argument("--descriptor-out", help="where to write the descriptor set (default: a temp file)")
    args = ap.parse_args()

    out = args.descriptor_out or os.path.join(tempfile.mkdtemp(), "api_descriptor.pb")
    fds = descriptor_set(out)
    methods = {}
    for f in fds.file:
        for s in f.service:
            full = f"{f.package}.{s.name}" if f.package else s.name
            methods[full] = [f"{full}.{m.name}" for m in s.method]

    with open(args.config) as fh:
        raw = yaml.safe_load(fh)
    if raw.pop("type", None) != "google.api.Service":
        sys.exit(f"{args.config}: `type: google.api.Service` is missing")
    service = json_format.ParseDict(raw, service_pb2.Service())
    if service.config_version.value != 3:
        sys.exit(f"config_version is {service.config_version.value}; ESPv2 needs 3")
    if not service.name.endswith(".cloud.goog"):
        sys.exit(f"name {service.name!r} is not an Endpoints service name")

    apis = [a.name for a in service.apis]
    unknown = [a for a in apis if a not in methods]
    if not apis or unknown:
        sys.exit(f"apis {apis}: not services of the proto: {unknown} (it has {sorted(methods)})")
    served = [m for a in apis for m in methods[a]]

    selectors = [("usage", r.selector) for r in service.usage.rules]
    selectors += [("authentication", r.selector) for r in service.authentication.rules]
    selectors += [("http", r.selector) for r in service.http.rules]
    selectors += [("backend", r.selector) for r in service.backend.rules]
    for where, sel in selectors:
        if sel != "*" and not fnmatch.filter(served, sel):
            sys.exit(f"{where} rule selector {sel!r} names no method of {apis}")
    usage = [r.selector for r in service.usage.rules]
    bare = [m for m in served if not any(s == "*" or fnmatch.fnmatch(m, s) for s in usage)]
    if bare:
        sys.exit(f"methods without a usage rule: {bare}")

    print(
        json.dumps(
            {
                "service": service.name,
                "apis": apis,
                "methods": len(served),
                "open": sorted(r.selector for r in service.usage.rules if r.allow_unregistered_calls),
                "descriptor": out,
                "descriptor_bytes": os.path.getsize(out),
            }
        )
    )


if __name__ == "__main__":
    main()
