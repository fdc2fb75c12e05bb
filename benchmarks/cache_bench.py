#!/usr/bin/env python3
"""Set-up and report of benchmarks/cache_bench.sh (the caching tier vs nginx behind the same HAProxy TLS).

usage (run with the project venv's python; cache_bench.sh calls it):
  cache_bench.py publish STACK_ENV FILES_DIR DOCROOT PACKAGE   upload + publish every FILES_DIR/*.bin through the
      first frontend, warm each into its owner's Varnish, check bodies, hard-link each file into DOCROOT at the same
      URL path (and DOCROOT/_cache/health for HAProxy's check); prints shell assignments (paths, owners)
  cache_bench.py haproxy STACK_RUN DIR NGINX_PORT HTTP_PORT HTTPS_PORT CACHE_PORT
      render haproxy.cfg + certificate under DIR with workload.render_haproxy from unit 0's CacheState, the ring
      replaced by the one nginx; prints the config's path
  cache_bench.py summary RESULTS_DIR [--command CMD] [--readme benchmarks/README.md]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import ssl
import statistics
import sys
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "charms" / "cache" / "src"), str(ROOT / "charms" / "common")]

from summarize import fmt_lat, fmt_num, fmt_ratio, load, ratio, summarize_downloads  # noqa: E402

import workload  # noqa: E402
from models import CacheState, RingMember, TLSMaterial  # noqa: E402
from updown_app.client import UpdownClient  # noqa: E402

# cache hit ÷ nginx behind the same HAProxy: 4 KiB from the performance issue, 100 MiB from the caching tier's
TARGET = {"f4k.bin": 0.9, "f100m.bin": 0.8}
BEGIN, END = "<!-- cache-results:begin -->", "<!-- cache-results:end -->"
LABEL = {"f4k.bin": "4 KiB", "f1m.bin": "1 MiB", "f100m.bin": "100 MiB"}


def stack_env(path: str) -> dict[str, str]:
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition("=")
        out[key.removeprefix("UPDOWN_TEST_STACK_")] = value
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def get(http: httpx.Client, url: str) -> tuple[int, dict[str, str], str]:
    """GET url streaming; (status, headers, sha256 of the body)."""
    h = hashlib.sha256()
    with http.stream("GET", url) as r:
        for chunk in r.iter_bytes(1 << 20):
            h.update(chunk)
        return r.status_code, dict(r.headers), h.hexdigest()


def publish(env_file: str, files_dir: str, docroot: str, package: str) -> int:
    env = stack_env(env_file)
    frontends = env["FRONTENDS"].split(",")
    units = [f"updown-cache/{i}" for i in range(len(frontends))]  # frontend i is unit i's HAProxy
    context = ssl.create_default_context(cafile=env["CA"])
    assignments = {"FRONTEND_0": frontends[0], "FRONTEND_1": frontends[1]}
    with (
        UpdownClient(frontends[0], key_id=env["KEY_ID"], secret=env["KEY"].encode(), verify=env["CA"]) as client,
        httpx.Client(verify=context, timeout=300) as http,
    ):
        for f in sorted(Path(files_dir).glob("*.bin")):
            want = sha256_file(f)
            record = client.upload(f, package=package, revision="1", visibility="public")
            client.publish(record["id"])
            path = record["path"]
            # The first GET is the owner's miss (it fetches from an app unit), the second must be its hit, from
            # either frontend: the consistent hash sends the path to the same Varnish.
            seen = []
            for frontend in (frontends[0], frontends[1], frontends[0]):
                status, headers, got = get(http, frontend + path)
                if status != 200 or got != want:
                    raise SystemExit(f"{frontend}{path}: status {status}, sha256 {got} (want {want})")
                seen.append((headers.get("x-cache"), headers.get("x-cache-unit")))
            if {u for _, u in seen} != {seen[0][1]} or [c for c, _ in seen[1:]] != ["HIT", "HIT"]:
                raise SystemExit(f"{path}: not one owner / not cached: {seen}")
            owner = units.index(seen[0][1])
            target = Path(docroot) / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            for d in [target.parent, *target.parent.parents]:
                if d == Path(docroot).parent:
                    break
                d.chmod(0o755)  # nginx's workers run unprivileged
            os.link(f, target)
            key = f.stem.upper()
            assignments |= {f"PATH_{key}": path, f"OWNER_{key}": str(owner), f"OTHER_{key}": str(1 - owner)}
            print(f"{path}: owner {seen[0][1]}, {f.stat().st_size} bytes, {seen}", file=sys.stderr)
    health = Path(docroot) / workload.CACHE_HEALTH_PATH.lstrip("/")
    health.parent.mkdir(parents=True, exist_ok=True)
    health.parent.chmod(0o755)
    health.write_text("OK\n")
    health.chmod(0o644)
    for key, value in assignments.items():
        print(f"{key}={shlex.quote(value)}")
    return 0


def haproxy(
    run: str, out_dir: str, nginx_port: int, http_port: int, https_port: int, cache_port: int, metrics_port: int
) -> int:
    """The frontend unit's HAProxy config, as the stack renders it for unit 0, with nginx as the only ring member:
    same TLS material, same origins and checks; only the ring and the listening ports differ."""
    stack = Path(run)
    unit0 = CacheState.model_validate_json((stack / "unit0" / "state.json").read_text())
    tls = TLSMaterial(chain=(stack / "ca.pem").read_text(), key=(stack / "tls.key").read_text())
    state = unit0.model_copy(
        update={
            "unit_name": "nginx-static/0",
            "config": unit0.config.model_copy(
                update={"http_port": http_port, "https_port": https_port, "cache_port": cache_port}
            ),
            "ring": (RingMember(unit_name="nginx-static/0", address="127.0.0.1", port=nginx_port),),
            "tls": tls,
            "telemetry": unit0.telemetry.model_copy(update={"haproxy": metrics_port}),
        }
    )
    state = CacheState.model_validate(state.model_dump())  # re-validate the edited copy
    layout = workload.Layout.under(Path(out_dir))
    workload.write_files(
        {
            layout.haproxy_cfg: workload.render_haproxy(state, layout),
            layout.tls_pem: tls.as_haproxy_pem(),
            layout.tls_metrics: workload.render_tls_metrics(tls),  # its metrics frontend serves it
        },
        private=frozenset({layout.tls_pem}),
    )
    layout.haproxy_socket.parent.mkdir(parents=True, exist_ok=True)
    print(layout.haproxy_cfg)
    return 0


# ------------------------------------------------------------------------------------------------------- report


def cpu_costs(runs: list[dict], split: list[dict]) -> dict[tuple, dict[str, float]]:
    """Median server CPU per request (4 KiB, µs) or per MB (larger files, ms) of each (server, file, conc):
    HAProxy, the cache (Varnish or nginx), total."""
    wrk = {(d["server"], d["file"], d["conc"], d["rep"]): d["wrk"] for d in runs if d.get("wrk")}
    per: dict[tuple, list[tuple[float, float]]] = {}
    for s in split:
        w = wrk.get((s["server"], s["file"], s["conc"], s["rep"]))
        if not w or not w["requests"]:
            continue
        unit = w["requests"] / 1e6 if s["file"] == "f4k.bin" else w["bytes"] / 1e6 / 1e3
        per.setdefault((s["server"], s["file"], s["conc"]), []).append(
            (s["haproxy_cpu_s"] / unit, s["cache_cpu_s"] / unit)
        )
    return {
        k: {
            "haproxy": statistics.median(h for h, _ in v),
            "cache": statistics.median(c for _, c in v),
            "total": statistics.median(h + c for h, c in v),
        }
        for k, v in per.items()
    }


def fmt_cost(cost: dict[tuple, dict[str, float]], server: str, f: str, c: int) -> str:
    d = cost.get((server, f, c))
    if d is None:
        return "–"
    if f == "f4k.bin":
        return f"{d['haproxy']:.0f} + {d['cache']:.0f} µs/req"
    return f"{d['haproxy']:.2f} + {d['cache']:.2f} ms/MB"


def cost_ratio(cost: dict[tuple, dict[str, float]], f: str, c: int) -> float | None:
    s, n = cost.get(("stack", f, c)), cost.get(("nginx", f, c))
    return None if s is None or n is None else ratio(n["total"], s["total"])


def build(res: str, command: str | None) -> tuple[str, dict]:
    runs = load(os.path.join(res, "downloads.jsonl"))
    dl = summarize_downloads(runs)
    split = load(os.path.join(res, "split.jsonl"))
    cost = cpu_costs(runs, split)
    versions = Path(res, "versions.txt").read_text() if Path(res, "versions.txt").exists() else ""
    settings = dict(line.split(": ", 1) for line in versions.splitlines() if ": " in line)

    def metric(server: str, f: str, c: int) -> float | None:
        d = dl.get((server, f, c))
        return None if d is None else (d["rps"] if f == "f4k.bin" else d["mbs"])

    lines = [
        "| test | server | req/s | MB/s | p50 | p99 | server CPU % | server CPU: HAProxy + cache | wrk CPU % "
        "| peak RSS MiB | stack ÷ nginx | n | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, float | None] = {}
    for f, c in (("f4k.bin", 16), ("f100m.bin", 4)):
        for s, label in (("stack", "cache hit (HAProxy + Varnish)"), ("nginx", "nginx static (HAProxy + nginx)")):
            d = dl.get((s, f, c))
            if d is None:
                continue
            r = ratio(metric("stack", f, c), metric("nginx", f, c)) if s == "stack" else None
            if s == "stack":
                ratios[f] = r
            lines.append(
                f"| GET {LABEL[f]} c{c} | {label} | {fmt_num(d['rps'])} | {fmt_num(d['mbs'])} | "
                f"{fmt_lat(d['p50_us'])} | {fmt_lat(d['p99_us'])} | {d['srv_cpu_pct']:.0f} | {fmt_cost(cost, s, f, c)} | "
                f"{d['wrk_cpu_pct']:.0f} | {d['rss_peak_kb'] / 1024:.0f} | {fmt_ratio(r) if s == 'stack' else ''} | "
                f"{d['n']} | {d['errors']} |"
            )

    owner, other = dl.get(("peer-owner", "f4k.bin", 1)), dl.get(("peer-other", "f4k.bin", 1))
    peer: dict[str, float] = {}
    if owner and other:
        peer = {"p50_us": other["p50_us"] - owner["p50_us"], "p99_us": other["p99_us"] - owner["p99_us"]}
        for s, key, d in (
            ("through the owning unit", "peer-owner", owner),
            ("through the other unit (peer hop)", "peer-other", other),
        ):
            lines.append(
                f"| GET 4 KiB c1 | {s} | {fmt_num(d['rps'])} | {fmt_num(d['mbs'])} | {fmt_lat(d['p50_us'])} | "
                f"{fmt_lat(d['p99_us'])} | {d['srv_cpu_pct']:.0f} | {fmt_cost(cost, key, 'f4k.bin', 1)} | "
                f"{d['wrk_cpu_pct']:.0f} | {d['rss_peak_kb'] / 1024:.0f} |  | {d['n']} | {d['errors']} |"
            )

    hit = sum(h.get("hit", 0) for h in split)
    miss = sum(h.get("miss", 0) for h in split)
    hit_ratio = hit / (hit + miss) if hit + miss else None

    def check(name: str, file: str) -> str:
        value, target = ratios.get(file), TARGET[file]
        mark = "n/a" if value is None else ("PASS" if value >= target else "FAIL")
        return f"- **{mark}** {name}: {fmt_ratio(value)} (target ≥ {target}×)"

    results = [
        check("4 KiB req/s (c16), cache hit ÷ nginx", "f4k.bin"),
        check("100 MiB MB/s (c4), cache hit ÷ nginx", "f100m.bin"),
        "- server CPU cost ratio (the nginx side's server CPU per request ÷ the stack's, i.e. the throughput ratio "
        "with the server core to themselves): 4 KiB "
        + fmt_ratio(cost_ratio(cost, "f4k.bin", 16))
        + ", 100 MiB "
        + fmt_ratio(cost_ratio(cost, "f100m.bin", 4)),
        "- hit ratio over the measured runs (varnishstat MAIN.cache_hit / (cache_hit + cache_miss), both units): "
        + ("–" if hit_ratio is None else f"{hit_ratio:.4%} ({hit:,} hits, {miss:,} misses)"),
        "- peer hop (4 KiB, wrk -c1, entering through the other unit minus through the owning unit): "
        + (f"p50 {peer['p50_us']:+.0f} µs, p99 {peer['p99_us']:+.0f} µs" if peer else "–"),
    ]
    notes = [
        "req/s, MB/s (10^6 bytes/s read by wrk, headers included), p50/p99 (wrk's histogram): medians of the runs;",
        "server CPU % = CPU time of the HAProxy + Varnish (or HAProxy + nginx) process trees on the measured path per",
        "second of run (100 % = the whole server core), split into HAProxy + cache (Varnish or nginx) CPU per request",
        "(4 KiB) or per MB (100 MiB); peak RSS: max summed VmHWM of those trees over the runs.",
    ]
    # Noise, from the per-run records of lib.sh's wrk_one: CPU used by anything but the measured trees and wrk.
    others = [(d.get("other_cpu_s", 0) / (d["wrk"]["duration_us"] / 1e6) * 100, d) for d in runs if d.get("wrk")]
    if others:
        top_pct, top = max(others, key=lambda x: x[0])
        busy = sum(1 for pct, _ in others if pct > 20)
        notes.append(
            f"Noise: other processes used a median {statistics.median(p for p, _ in others):.0f}% of a core per run, "
            f"at most {top_pct:.0f}% ({top['server']} {LABEL.get(top['file'], top['file'])} c{top['conc']} run "
            f"{top['rep']}; top: {top.get('other_procs') or 'kernel/short-lived'}); max steal "
            f"{max(d.get('steal_s', 0) for _, d in others):.2f} s."
        )
        if busy:
            notes.append(
                f"**WARNING: other processes took more than 20% of a core in {busy} of {len(others)} runs: the box "
                "was shared; per-run numbers in downloads.jsonl.**"
            )
    head = [f"Command: `{command.strip()}`"] if command else []
    head += [f"{k}: {settings[k]}" for k in ("date_utc", "settings", "cpu", "kernel", "haproxy", "varnish",
                                             "nginx", "wrk", "updown") if k in settings]  # fmt: skip
    md = "\n".join(["#### Latest run", "", *[f"{h}  " for h in head], "", *lines, "", *notes, "", *results, ""])
    summary = {
        "downloads": {f"{k[0]}:{k[1]}:c{k[2]}": v for k, v in dl.items()},
        "ratios": ratios,
        "cpu_cost": {f"{k[0]}:{k[1]}:c{k[2]}": v for k, v in cost.items()},
        "hit_ratio": hit_ratio,
        "hits": hit,
        "misses": miss,
        "peer_hop_us": peer,
    }
    return md, summary


def summary(res: str, command: str | None, readme: str | None) -> int:
    md, data = build(res, command)
    Path(res, "summary.md").write_text(md)
    Path(res, "summary.json").write_text(json.dumps(data, indent=1, default=str))
    print(md)
    if readme:
        text = Path(readme).read_text()
        if BEGIN not in text or END not in text:
            print(f"no {BEGIN} / {END} markers in {readme}", file=sys.stderr)
            return 1
        pre, rest = text.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        Path(readme).write_text(f"{pre}{BEGIN}\n{md}\n{END}{post}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("publish")
    p.add_argument("env_file")
    p.add_argument("files_dir")
    p.add_argument("docroot")
    p.add_argument("package")
    h = sub.add_parser("haproxy")
    h.add_argument("run")
    h.add_argument("dir")
    for name in ("nginx_port", "http_port", "https_port", "cache_port", "metrics_port"):
        h.add_argument(name, type=int)
    s = sub.add_parser("summary")
    s.add_argument("results")
    s.add_argument("--command")
    s.add_argument("--readme")
    a = ap.parse_args()
    if a.cmd == "publish":
        return publish(a.env_file, a.files_dir, a.docroot, a.package)
    if a.cmd == "haproxy":
        return haproxy(a.run, a.dir, a.nginx_port, a.http_port, a.https_port, a.cache_port, a.metrics_port)
    return summary(a.results, a.command, a.readme)


if __name__ == "__main__":
    sys.exit(main())
