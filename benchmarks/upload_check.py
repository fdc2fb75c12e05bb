#!/usr/bin/env python3
"""Check the JSON printed by updown_upload.py on stdin against the expected size and sha256.

usage: upload_check.py SIZE SHA256 < client-output
  ->  prints "<ok|FAIL:reason> <transfer_s|null> <digests_after_s|null> <method_with_underscores>"
"""

import json
import sys

size, sha = int(sys.argv[1]), sys.argv[2]
try:
    d = json.loads(sys.stdin.read())
    rec = d["record"]
    bad = []
    if int(rec.get("size", -1)) != size:
        bad.append(f"size={rec.get('size')}")
    if rec.get("sha256", sha) != sha:
        bad.append(f"sha256={rec.get('sha256')}")
    ok = "ok" if not bad else "FAIL:" + ",".join(bad)
    later = d.get("digests_after_s")
    print(
        ok, d.get("transfer_s", "null"), "null" if later is None else later, str(d.get("method", "?")).replace(" ", "_")
    )
except Exception as exc:
    print(f"FAIL:{type(exc).__name__}", "null", "null", "?")
