"""bundle.yaml checked against the charms it deploys, without a controller: every relation joins endpoints of
the same interface on opposite sides, every option exists in its charm with the right type, and the
integration tests' derived bundle is sound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BUNDLE = yaml.safe_load((REPO / "bundle.yaml").read_text())
LOCAL = {
    "./charms/updown-app/updown-app_amd64.charm": REPO / "charms/updown-app/charmcraft.yaml",
    "./charms/cache/updown-cache_amd64.charm": REPO / "charms/cache/charmcraft.yaml",
}
# The store charms' endpoints we use (their charmcraft.yaml is not in this repository).
STORE = {
    "postgresql": {"provides": {"database": {"interface": "postgresql_client"}}},
    "self-signed-certificates": {"provides": {"certificates": {"interface": "tls-certificates"}}},
}
TYPES = {"string": str, "int": int, "float": (int, float), "boolean": bool, "secret": str}


def spec(app: str) -> dict[str, Any]:
    charm = BUNDLE["applications"][app]["charm"]
    if charm in LOCAL:
        return yaml.safe_load(LOCAL[charm].read_text())
    return STORE[charm]


def endpoint(app: str, name: str) -> tuple[str, str]:
    s = spec(app)
    for side in ("requires", "provides", "peers"):
        if name in s.get(side, {}):
            return side, s[side][name]["interface"]
    raise AssertionError(f"{app} has no endpoint {name}")


def test_relations_join_matching_endpoints() -> None:
    assert BUNDLE["relations"]
    for a, b in BUNDLE["relations"]:
        (app_a, ep_a), (app_b, ep_b) = a.split(":"), b.split(":")
        side_a, iface_a = endpoint(app_a, ep_a)
        side_b, iface_b = endpoint(app_b, ep_b)
        assert iface_a == iface_b, (a, b)
        assert {side_a, side_b} == {"requires", "provides"}, (a, b)


def test_options_exist_with_their_types() -> None:
    for app, body in BUNDLE["applications"].items():
        options = spec(app).get("config", {}).get("options", {})
        for key, value in (body.get("options") or {}).items():
            assert key in options, f"{app}: no option {key}"
            assert isinstance(value, TYPES[options[key]["type"]]), f"{app}: {key}={value!r}"


def test_the_tiers_and_channels() -> None:
    apps = BUNDLE["applications"]
    assert apps["postgresql"]["channel"] == "16/stable"
    assert apps["cache-frontend"]["options"]["role"] == "frontend"
    assert apps["cache-backend"]["options"]["role"] == "backend"
    assert apps["updown-app"]["options"]["public-hostname"] == apps["cache-frontend"]["options"]["public-hostname"]


def test_integration_bundle_without_s3_drops_the_backend_tier(tmp_path: Path, monkeypatch) -> None:
    import tests.integration.test_bundle as it

    for charm in LOCAL:
        path = REPO / charm
        if not path.exists():
            monkeypatch.setenv(
                "UPDOWN_APP_CHARM" if "updown-app" in charm else "UPDOWN_CACHE_CHARM", str(tmp_path / "x.charm")
            )
    (tmp_path / "x.charm").write_text("")
    monkeypatch.setattr(it, "WITH_S3", False)
    derived = yaml.safe_load(it.bundle(tmp_path).read_text())
    assert "cache-backend" not in derived["applications"]
    assert all("cache-backend" not in e for r in derived["relations"] for e in r)
    assert derived["applications"]["updown-app"]["num_units"] == 1
