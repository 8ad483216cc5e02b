#!/usr/bin/env python3
"""What MLflow's own Python client sees of a version pixguard published.

Checks that `MlflowClient.get_model_version_by_alias` finds it with pixguard's digest tags and that
`mlflow.artifacts.download_artifacts("models:/<name>@<alias>")` returns the package byte for byte
(MLflow adds a `registered_model_meta` file of its own). Prints the version as JSON; exits non-zero
on any difference.
"""
import argparse
import filecmp
import json
import os
import pathlib
import sys
import tempfile

import mlflow
from mlflow import MlflowClient


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--alias", required=True)
    p.add_argument("--package", required=True)
    args = p.parse_args()
    mlflow.set_tracking_uri(args.tracking_uri)
    version = MlflowClient().get_model_version_by_alias(args.name, args.alias)
    weights = version.tags.get("pixguard.sha256.weights")
    package = pathlib.Path(args.package)
    with tempfile.TemporaryDirectory() as tmp:
        got = pathlib.Path(mlflow.artifacts.download_artifacts(f"models:/{args.name}@{args.alias}", dst_path=tmp))
        ours = sorted(str(f.relative_to(package)) for f in package.rglob("*") if f.is_file())
        theirs = sorted(str(f.relative_to(got)) for f in got.rglob("*") if f.is_file() and f.name != "registered_model_meta")
        if ours != theirs:
            print(f"file lists differ: package {ours}, downloaded {theirs}", file=sys.stderr)
            return 1
        different = [f for f in ours if not filecmp.cmp(package / f, got / f, shallow=False)]
        if different:
            print(f"files differ: {different}", file=sys.stderr)
            return 1
    print(json.dumps({"version": version.version, "aliases": list(version.aliases), "weights_sha256": weights,
                      "files": len(ours)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
