#!/usr/bin/env python3
"""Turn one results directory of benchmarks/run.sh into a Markdown report (stdlib only).

usage: summarize.py RESULTS_DIR [--command CMD] [--readme benchmarks/README.md]

Reads downloads.jsonl (one line per wrk run), uploads.jsonl (one line per upload rep), slow.jsonl (one line per
server) and versions.txt; writes summary.md and summary.json into RESULTS_DIR and prints summary.md. With
--readme, replaces the text between the results markers of that file with the same report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

SERVERS = ["nginx", "registry", "updown"]
DOWNLOADS = [("f4k.bin", 16), ("f1m.bin", 16), ("f100m.bin", 4)]
SIZE_LABEL = {"f4k.bin": "4 KiB", "f1m.bin": "1 MiB", "f100m.bin": "100 MiB", "f1g.bin": "1 GiB"}
SERVER_LABEL = {"nginx": "nginx (static, sendfile)", "registry": "Docker registry", "updown": "updown"}
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def load(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_lat(us: float) -> str:
    if us != us:
        return "–"
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:.1f} ms" if us < 1e5 else f"{us / 1e3:.0f} ms"
    return f"{us:.0f} µs"


def fmt_num(x: float) -> str:
    if x != x:
        return "–"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def mib(kb: float) -> str:
    return f"{kb / 1024:.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


def fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def summarize_downloads(rows: list[dict]) -> dict:
    by: dict[tuple, list[dict]] = {}
    for d in rows:
        w = d.get("wrk")
        if not w:
            continue
        dur = w["duration_us"] / 1e6
        by.setdefault((d["server"], d["file"], d["conc"]), []).append(
            {
                "rps": w["requests"] / dur,
                "mbs": w["bytes"] / dur / 1e6,
                "p50": w["lat_p50_us"],
                "p99": w["lat_p99_us"],
                "rss": d["rss_peak_kb"],
                "cpu": d["server_cpu_s"] / dur * 100,
                "errs": w["err_connect"] + w["err_read"] + w["err_write"] + w["err_status"] + w["err_timeout"],
                "wrk_cpu": d.get("wrk_cpu_s", 0) / dur * 100,
                "other": d.get("other_cpu_s", 0) / dur * 100,
                "steal": d.get("steal_s", 0),
                "other_procs": d.get("other_procs", ""),
                "rep": d["rep"],
            }
        )
    out = {}
    for key, rs in by.items():
        out[key] = {
            "n": len(rs),
            "rps": med([r["rps"] for r in rs]),
            "rps_min": min(r["rps"] for r in rs),
            "rps_max": max(r["rps"] for r in rs),
            "mbs": med([r["mbs"] for r in rs]),
            "p50_us": med([r["p50"] for r in rs]),
            "p99_us": med([r["p99"] for r in rs]),
            "rss_peak_kb": max(r["rss"] for r in rs),
            "srv_cpu_pct": med([r["cpu"] for r in rs]),
            "errors": sum(r["errs"] for r in rs),
            "wrk_cpu_pct": med([r["wrk_cpu"] for r in rs]),
            "other_cpu_pct_max": max(r["other"] for r in rs),
            "steal_s_max": max(r["steal"] for r in rs),
            "other_procs_worst": max(rs, key=lambda r: r["other"])["other_procs"],
            "disturbed_runs": [(r["rep"], round(r["other"])) for r in rs if r["other"] > 20],
        }
    return out


def summarize_uploads(rows: list[dict]) -> dict:
    by: dict[tuple, list[dict]] = {}
    for d in rows:
        by.setdefault((d["server"], d["file"]), []).append(d)
    out = {}
    for key, rs in by.items():
        good = [r for r in rs if r["ok"] == "ok"]
        ts = [r["transfer_s"] for r in good if r.get("transfer_s") is not None]
        ws = [r["wall_s"] for r in good]
        size = rs[0]["bytes"]
        out[key] = {
            "n": len(rs),
            "ok": len(good),
            "fails": sorted({r["ok"] for r in rs if r["ok"] != "ok"}),
            "transfer_s": med(ts) if ts else None,
            "mbs": size / med(ts) / 1e6 if ts else None,
            "wall_s": med(ws) if ws else None,
            "server_cpu_s": med([r["server_cpu_s"] for r in good]) if good else None,
            "rss_before_kb": max(r["rss_before_kb"] for r in rs),
            "rss_peak_kb": max(r["rss_peak_kb"] for r in rs),
            "rss_growth_kb": max(r["rss_peak_kb"] - r["rss_before_kb"] for r in rs),
            "method": rs[0].get("method", ""),
            "digests_after_s": med(da)
            if (da := [r["digests_after_s"] for r in good if r.get("digests_after_s")])
            else None,
        }
    return out


def build(res: str, command: str | None) -> tuple[str, dict]:
    dl = summarize_downloads(load(os.path.join(res, "downloads.jsonl")))
    up = summarize_uploads(load(os.path.join(res, "uploads.jsonl")))
    slow = {d["server"]: d for d in load(os.path.join(res, "slow.jsonl"))}
    versions = (
        open(os.path.join(res, "versions.txt")).read() if os.path.exists(os.path.join(res, "versions.txt")) else ""
    )
    settings = dict(line.split(": ", 1) for line in versions.splitlines() if ": " in line)

    def metric(server: str, f: str, c: int) -> float | None:
        d = dl.get((server, f, c))
        if d is None:
            return None
        return d["rps"] if f == "f4k.bin" else d["mbs"]

    lines = [
        "| test | server | req/s | MB/s | p50 | p99 | peak RSS MiB | updown ÷ nginx | updown ÷ registry | n | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, float | None] = {}
    for f, c in DOWNLOADS:
        for s in SERVERS:
            d = dl.get((s, f, c))
            if d is None:
                continue
            rn = rr = None
            if s == "updown":
                rn = ratio(metric("updown", f, c), metric("nginx", f, c))
                rr = ratio(metric("updown", f, c), metric("registry", f, c))
                ratios[f"{f}:nginx"], ratios[f"{f}:registry"] = rn, rr
            lines.append(
                f"| GET {SIZE_LABEL[f]} c{c} | {SERVER_LABEL[s]} | {fmt_num(d['rps'])} | {fmt_num(d['mbs'])} | "
                f"{fmt_lat(d['p50_us'])} | {fmt_lat(d['p99_us'])} | {mib(d['rss_peak_kb'])} | "
                f"{fmt_ratio(rn) if s == 'updown' else ''} | {fmt_ratio(rr) if s == 'updown' else ''} | "
                f"{d['n']} | {d['errors']} |"
            )
    for f in sorted({k[1] for k in up}, key=lambda x: list(SIZE_LABEL).index(x)):
        for s in ["registry", "updown"]:
            u = up.get((s, f))
            if u is None:
                continue
            rr = None
            if s == "updown":
                rr = ratio(u["mbs"], (up.get(("registry", f)) or {}).get("mbs"))
                ratios[f"up:{f}:registry"] = rr
            how = "monolithic blob PUT" if s == "registry" else "signed multipart POST"
            t = "–" if u["transfer_s"] is None else f"{u['transfer_s']:.2f} s"
            lines.append(
                f"| upload {SIZE_LABEL[f]} ({how}) | {SERVER_LABEL[s]} | – | "
                f"{'–' if u['mbs'] is None else fmt_num(u['mbs'])} | {t} | – | "
                f"{mib(u['rss_peak_kb'])} (+{mib(u['rss_growth_kb'])}) | | "
                f"{fmt_ratio(rr) if s == 'updown' else ''} | {u['ok']}/{u['n']} | {u['n'] - u['ok']} |"
            )
    for s in SERVERS:
        d = slow.get(s)
        if d is None:
            continue
        cl = d.get("client") or {}
        errs = sum((cl.get("errors") or {}).values()) + sum(
            v for k, v in (cl.get("status") or {}).items() if k != "200"
        )
        lines.append(
            f"| {cl.get('conns', 0):,} slow GETs of 100 MiB ({(cl.get('rate_per_conn') or 0) // 1024} KiB/s each, "
            f"{cl.get('hold_s', 0):.0f} s hold) | {SERVER_LABEL[s]} | – | {cl.get('mb_per_s', '–')} | – | – | "
            f"{mib(d['rss_peak_kb'])} (+{mib(d['rss_peak_kb'] - d['rss_before_kb'])}) | | | "
            f"{cl.get('open_at_end', 0)}/{cl.get('conns', '?')} | {errs} |"
        )

    # targets
    def check(name: str, value: float | None, goal: str, ok: bool | None, shown: str) -> str:
        mark = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        return f"- **{mark}** {name}: {shown} (target {goal})"

    def ge(x: float | None, t: float) -> bool | None:
        return None if x is None else x >= t

    # The goals of the performance issue: ratios to the peers measured in the same run.
    goals = [
        ("4 KiB public GET req/s, updown ÷ nginx", "f4k.bin:nginx", 0.25),
        ("1 MiB public GET MB/s, updown ÷ nginx", "f1m.bin:nginx", 0.6),
        ("100 MiB public GET MB/s, updown ÷ registry", "f100m.bin:registry", 1.0),
        ("100 MiB public GET MB/s, updown ÷ nginx", "f100m.bin:nginx", 0.9),
        ("4 KiB public GET req/s, updown ÷ registry", "f4k.bin:registry", 4.0),
        ("1 GiB upload MB/s, updown ÷ registry monolithic PUT", "up:f1g.bin:registry", 1.0),
    ]
    targets = [
        check(name, ratios.get(key), f"≥ {goal}×", ge(ratios.get(key), goal), fmt_ratio(ratios.get(key)))
        for name, key, goal in goals
    ]
    u1g = up.get(("updown", "f1g.bin"))
    g = None if u1g is None else u1g["rss_growth_kb"] * 1024 / 1e6
    targets.append(
        check(
            "updown RSS growth during the 1 GiB upload",
            g,
            "< 50 MB",
            None if g is None else g < 50,
            "–" if g is None else f"{g:.0f} MB",
        )
    )
    u100 = up.get(("updown", "f100m.bin"))
    if u100 is not None and u1g is not None:
        targets.append(
            f"  - for comparison, growth during the 100 MiB upload: {u100['rss_growth_kb'] * 1024 / 1e6:.0f} MB"
        )
    later = [
        (f, u["digests_after_s"])
        for f in ("f100m.bin", "f1g.bin")
        if (u := up.get(("updown", f))) and u["digests_after_s"]
    ]
    if later:
        targets.append(
            "  - updown's SHA-1 and SHA-512 (computed from the stored object after the answer; a publish waits for them)"
            " known after: " + ", ".join(f"{SIZE_LABEL[f]} {s:.2f} s" for f, s in later) + " (median; in server CPU)"
        )
    sl = slow.get("updown")
    p = None if sl is None else sl["rss_peak_kb"] * 1024 / 1e6
    okc = None if sl is None else (sl.get("client") or {}).get("open_at_end", 0)
    targets.append(
        check(
            f"updown peak RSS with {slow_n(sl)} concurrent slow downloads",
            p,
            "< 100 MB",
            None if p is None else (p < 100 and okc == (sl.get("client") or {}).get("conns")),
            "–" if p is None else f"{p:.0f} MB, {okc} connections served to the end",
        )
    )

    notes = [
        "req/s and MB/s: median of the runs (MB/s = 10^6 bytes/s read by wrk, headers included); p50/p99: median of the",
        "runs' wrk latency percentiles; peak RSS: max VmHWM of the server's process tree over the runs (uploads and",
        "slow downloads: peak (+ growth over the RSS just before the measured transfer)). Ratios use req/s for 4 KiB",
        "and MB/s for 1 MiB and 100 MiB. Upload MB/s = file bytes / median upload time (p50 column).",
        "n: runs (downloads), ok reps (uploads), connections still open at the end (slow downloads).",
    ]
    if dl:
        worst = max(dl.items(), key=lambda kv: kv[1]["other_cpu_pct_max"])
        notes.append(
            "Noise: server CPU% / wrk CPU% (medians) per row are in summary.json; the busiest run had "
            f"{worst[1]['other_cpu_pct_max']:.0f}% of a core used by other processes ({worst[0][0]} "
            f"{SIZE_LABEL[worst[0][1]]}; top: {worst[1]['other_procs_worst'] or 'kernel/short-lived'}), max steal {max(v['steal_s_max'] for v in dl.values()):.2f} s."
        )
        disturbed = [
            f"{k[0]} {SIZE_LABEL[k[1]]} run {rep} ({pct}%)" for k, v in dl.items() for rep, pct in v["disturbed_runs"]
        ]
        if disturbed:
            notes.append(
                "**WARNING: other processes took more than 20% of a core during: "
                + ", ".join(disturbed)
                + " (per-run numbers in downloads.jsonl).**"
            )
    head = []
    if command:
        head.append(f"Command: `{command.strip()}`")
    for k in (
        "date_utc",
        "settings",
        "cpu",
        "kernel",
        "asgi_server",
        "nginx",
        "wrk",
        "docker-registry",
        "updown",
        "python",
        "src_changed",
    ):
        if k in settings:
            head.append(f"{k}: {settings[k]}")
    md = "\n".join(
        ["### Latest run", "", *[f"{h}  " for h in head], "", *lines, "", *notes, "", "### Targets", "", *targets, ""]
    )
    summary = {
        "downloads": {f"{k[0]}:{k[1]}:c{k[2]}": v for k, v in dl.items()},
        "uploads": {f"{k[0]}:{k[1]}": v for k, v in up.items()},
        "slow": slow,
        "ratios": ratios,
    }
    return md, summary


def slow_n(sl: dict | None) -> str:
    if not sl:
        return "1,000"
    return f"{(sl.get('client') or {}).get('conns', 1000):,}"


# Run-to-run spread of a ratio on a quiet box (the same commit run several times: ±10% on 4 KiB and 1 MiB, less on
# 100 MiB); a ratio further below the recorded run than this is a regression until explained.
NOISE = 0.15


def regressions(ratios: dict[str, float | None], recorded: dict) -> list[str]:
    """A warning per ratio that fell below the recorded run's by more than the noise."""
    out = []
    for key, was in (recorded.get("ratios") or {}).items():
        now = ratios.get(key)
        if now is not None and was and now < was * (1 - NOISE):
            out.append(f"{key}: {now:.2f}× now, {was:.2f}× recorded ({recorded.get('commit', '?')})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--command")
    ap.add_argument("--readme")
    ap.add_argument("--recorded", help="JSON of the last recorded run: compared against, rewritten with --readme")
    a = ap.parse_args()
    md, summary = build(a.results, a.command)
    if a.recorded and os.path.exists(a.recorded):
        with open(a.recorded) as fh:
            recorded = json.load(fh)
        worse = regressions(summary["ratios"], recorded)
        if worse:
            md += (
                f"\n**WARNING: below the recorded run by more than the noise ({NOISE:.0%}):** "
                + "; ".join(worse)
                + "\n"
            )
        else:
            md += f"\nNo ratio below the recorded run ({recorded.get('commit', '?')}) by more than {NOISE:.0%}.\n"
    with open(os.path.join(a.results, "summary.md"), "w") as fh:
        fh.write(md)
    with open(os.path.join(a.results, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1, default=str)
    print(md)
    if a.readme:
        text = open(a.readme).read()
        if BEGIN not in text or END not in text:
            print(f"no {BEGIN} / {END} markers in {a.readme}", file=sys.stderr)
            return 1
        pre, rest = text.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        with open(a.readme, "w") as fh:
            fh.write(f"{pre}{BEGIN}\n{md}\n{END}{post}")
        if a.recorded:
            settings = dict(
                line.split(": ", 1)
                for line in open(os.path.join(a.results, "versions.txt")).read().splitlines()
                if ": " in line
            )
            with open(a.recorded, "w") as fh:
                commit = settings.get("updown", "?").split(" git ")[-1]
                json.dump(
                    {"commit": commit, "date_utc": settings.get("date_utc"), "ratios": summary["ratios"]}, fh, indent=1
                )
                fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
