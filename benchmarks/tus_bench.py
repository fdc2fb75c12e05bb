"""A resumable upload in 8 MiB chunks through updown (tus, Swift backend) vs the Docker registry's chunked blob
upload (POST, PATCH per chunk, PUT with the digest) of the same file, on the same machine.

    scripts/services/swift.sh start        # a Swift on loopback (URL from UPDOWN_TEST_SWIFT_URL or --swift-url)
    .venv/bin/python benchmarks/tus_bench.py [--size-mib 1024] [--chunk-mib 8] [--reps 3] [--json out.json]

Both clients are the same httpx loop: read a chunk from the file, send it, wait for the answer. updown's time runs
from the creation request to the answer of the last PATCH, so it includes the final verification (the parts read
back once and hashed) and the SLO manifest; the registry's from its POST to the answer of its final PUT. Digests are
computed before the clock starts on both sides. After each updown upload the script waits, untimed, until its
SHA-1 and SHA-512 are known (computed from the stored object after the answer), so that work never overlaps the
next measured upload. Reports MB/s (median), updown/registry ratio (target >= 1.0), the app's peak RSS (VmHWM;
target: under 100 MB) and how long after the answer the digests were known.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from updown_app.core import signing  # noqa: E402

MiB = 1024 * 1024
KEY_ID = "bench"
TUS = {"Tus-Resumable": "1.0.0", "X-Forwarded-Proto": "https"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit(f"server not ready: {url}\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def chunks(path: Path, size: int):  # type: ignore[no-untyped-def]
    with path.open("rb") as f:
        while data := f.read(size):
            yield data


class Updown:
    def __init__(self, work: Path, swift_url: str, user: str, key: str) -> None:
        self.secret = secrets.token_hex(32)
        self.port = free_port()
        self.log = work / "updown.log"
        env = {
            **os.environ,
            "UPDOWN_DATA_DIR": str(work / "updown"),
            "UPDOWN_PORT": str(self.port),
            "UPDOWN_TLS": "false",
            "UPDOWN_TRUSTED_PROXIES": '["127.0.0.1/32"]',
            "UPDOWN_HMAC_KEYS": json.dumps({KEY_ID: self.secret}),
            "UPDOWN_MAX_UPLOAD_SIZE": str(16 * 1024 * MiB),
            "UPDOWN_ACCESS_LOG": "false",
            "UPDOWN_LOG_LEVEL": "warning",
            "UPDOWN_STORAGE__BACKEND": "swift",
            "UPDOWN_STORAGE__SWIFT__AUTH": "tempauth",
            "UPDOWN_STORAGE__SWIFT__AUTH_URL": f"{swift_url}/auth/v1.0",
            "UPDOWN_STORAGE__SWIFT__USERNAME": user,
            "UPDOWN_STORAGE__SWIFT__PASSWORD": key,
            "UPDOWN_STORAGE__SWIFT__CONTAINER": f"bench-tus-{secrets.token_hex(4)}",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "updown_app", "serve"], env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.digests_after: list[float] = []  # per upload: seconds from its answer to all four digests known
        wait_ready(f"{self.url}/readyz", self.proc, self.log)

    def upload(self, path: Path, digests: dict[str, str], chunk: int, n: int) -> float:
        fields = {
            "package": "bench",
            "revision": str(n),
            "filename": "big.bin",
            "visibility": "public",
            **digests,
            **signing.fresh_fields(),
        }
        metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())
        headers = {
            **TUS,
            "Authorization": signing.authorization_header(KEY_ID, self.secret.encode(), "POST", "/v1/uploads", fields),
            "Upload-Length": digests["size"],
            "Upload-Metadata": metadata,
        }
        with httpx.Client(base_url=self.url, timeout=600) as http:
            start = time.perf_counter()
            r = http.post("/v1/uploads", headers=headers)
            r.raise_for_status()
            location, offset = r.headers["location"], 0
            for data in chunks(path, chunk):
                r = http.patch(
                    location,
                    content=data,
                    headers={**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
                )
                if r.status_code != 204:
                    sys.exit(f"updown PATCH: {r.status_code} {r.text}")
                offset = int(r.headers["upload-offset"])
            elapsed = time.perf_counter() - start
            file_id = r.headers.get("updown-file-id")
            assert file_id, "the upload did not complete"
            # SHA-1/SHA-512 are computed from the stored object after the answer (a publish waits for them): waited
            # for here, untimed, so that work never overlaps the next measured upload (either side's).
            path_ = f"/v1/files/{file_id}"
            while True:
                fields = signing.fresh_fields()
                auth = signing.authorization_header(KEY_ID, self.secret.encode(), "GET", path_, fields)
                record = http.get(path_, params=fields, headers={**TUS, "Authorization": auth}).json()
                if record.get("sha1") and record.get("sha512"):
                    break
                time.sleep(0.05)
            self.digests_after.append(time.perf_counter() - start - elapsed)
        return elapsed

    def close(self) -> int:
        hwm = vm_hwm_kib(self.proc.pid)
        stop(self.proc)
        return hwm


class Registry:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        data = work / "registry-data"
        data.mkdir()
        config = work / "registry.yml"
        template = (ROOT / "benchmarks/conf/registry.yml.in").read_text()
        config.write_text(
            template.replace("@BENCH_DIR@/run/registry-data", str(data)).replace("@PORT@", str(self.port))
        )
        self.log = work / "registry.log"
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_ready(f"{self.url}/v2/", self.proc, self.log)

    def upload(self, path: Path, sha256: str, chunk: int, n: int) -> float:
        with httpx.Client(base_url=self.url, timeout=600) as http:
            start = time.perf_counter()
            r = http.post(f"/v2/bench{n}/blobs/uploads/")
            r.raise_for_status()
            location, offset = r.headers["location"], 0
            for data in chunks(path, chunk):
                r = http.patch(
                    location,
                    content=data,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(data) - 1}",
                    },
                )
                if r.status_code != 202:
                    sys.exit(f"registry PATCH: {r.status_code} {r.text}")
                location = r.headers["location"]
                offset += len(data)
            sep = "&" if "?" in location else "?"
            r = http.put(f"{location}{sep}digest=sha256:{sha256}")
            if r.status_code != 201:
                sys.exit(f"registry PUT: {r.status_code} {r.text}")
            return time.perf_counter() - start

    def close(self) -> None:
        stop(self.proc)


def targets(report: dict[str, Any]) -> list[str]:
    """The performance issue's goals for a resumable upload, PASS/FAIL."""

    def mark(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    return [
        f"- **{mark(report['ratio'] >= 1.0)}** {report['size_mib']} MiB tus upload MB/s, updown ÷ registry chunked:"
        f" {report['ratio']:.2f}× (target ≥ 1.0×)",
        f"- **{mark(report['updown_peak_rss_mb'] < 100)}** updown peak RSS during it: {report['updown_peak_rss_mb']} MB"
        " (target < 100 MB)",
        f"  - updown's SHA-1 and SHA-512, computed from the stored object after the answer (a publish waits for them),"
        f" known {report['updown_digests_after_s']} s after it (first rep; not in the timed upload)",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--chunk-mib", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--swift-url", default=os.environ.get("UPDOWN_TEST_SWIFT_URL", "http://127.0.0.1:18080"))
    p.add_argument("--swift-user", default=os.environ.get("UPDOWN_TEST_SWIFT_USER", "test:tester"))
    p.add_argument("--swift-key", default=os.environ.get("UPDOWN_TEST_SWIFT_KEY", "testing"))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if shutil.which("docker-registry") is None:
        sys.exit("docker-registry is not installed (apt-get install docker-registry)")
    size, chunk = args.size_mib * MiB, args.chunk_mib * MiB
    with tempfile.TemporaryDirectory(prefix="tus-bench-") as tmp:
        work = Path(tmp)
        path = work / "big.bin"
        md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        with path.open("wb") as f:
            for _ in range(0, size, 8 * MiB):
                block = os.urandom(min(8 * MiB, size - f.tell()))
                md5.update(block)
                sha.update(block)
                f.write(block)
        digests = {"size": str(size), "md5": md5.hexdigest(), "sha256": sha.hexdigest()}
        updown, registry = Updown(work, args.swift_url, args.swift_user, args.swift_key), Registry(work)
        times: dict[str, list[float]] = {"updown": [], "registry": []}
        try:
            for n in range(args.reps):
                times["registry"].append(registry.upload(path, digests["sha256"], chunk, n))
                times["updown"].append(updown.upload(path, digests, chunk, n))
                print(f"rep {n + 1}: registry {times['registry'][-1]:.2f} s, updown {times['updown'][-1]:.2f} s")
        finally:
            hwm = updown.close()
            registry.close()
    mbps = {k: size / statistics.median(v) / 1e6 for k, v in times.items()}
    report = {
        "size_mib": args.size_mib,
        "chunk_mib": args.chunk_mib,
        "reps": args.reps,
        "updown_mb_s": round(mbps["updown"], 1),
        "registry_mb_s": round(mbps["registry"], 1),
        "ratio": round(mbps["updown"] / mbps["registry"], 2),
        "updown_peak_rss_mb": round(hwm * 1024 / 1e6, 1),
        # the first upload's: the later reps send the same content, stored once, whose digests are known already
        "updown_digests_after_s": round(updown.digests_after[0], 2),
        "times_s": {k: [round(t, 2) for t in v] for k, v in times.items()},
    }
    print(json.dumps(report, indent=2))
    for line in targets(report):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
