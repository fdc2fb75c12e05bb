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
    "s3-integrator": {"provides": {"s3-credentials": {"interface": "s3"}}},
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
    assert apps["s3-integrator"]["channel"] == "1/stable"  # the track with the sync-s3-credentials action
    assert apps["cache-frontend"]["options"]["role"] == "frontend"
    assert apps["cache-backend"]["options"]["role"] == "backend"
    assert apps["updown-app"]["options"]["public-hostname"] == apps["cache-frontend"]["options"]["public-hostname"]


def with_overlay(bundle: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Juju's overlay rules for what we use: an application given as empty is removed with its relations, one
    given with keys has them merged over the bundle's (options merged key by key)."""
    apps = {name: dict(body) for name, body in bundle["applications"].items()}
    for name, body in overlay.get("applications", {}).items():
        if body is None:
            apps.pop(name, None)
            continue
        merged = {**apps.get(name, {}), **body}
        merged["options"] = {**apps.get(name, {}).get("options", {}), **body.get("options", {})}
        apps[name] = merged
    relations = [r for r in bundle["relations"] if all(e.split(":")[0] in apps for e in r)]
    return {**bundle, "applications": apps, "relations": relations}


def test_the_test_overlay_makes_a_bundle_that_can_go_active() -> None:
    """bundle-test-overlay.yaml (next to bundle.yaml; tests/integration deploys with it): one app unit on local
    storage, no backend cache tier (it would need a store that presigns)."""
    overlay = yaml.safe_load((REPO / "bundle-test-overlay.yaml").read_text())
    derived = with_overlay(BUNDLE, overlay)
    for gone in ("cache-backend", "s3-integrator"):
        assert gone not in derived["applications"]
        assert all(gone not in e for r in derived["relations"] for e in r)
    app = derived["applications"]["updown-app"]
    assert app["num_units"] == 1 and app["options"]["storage-backend"] == "local"
    assert app["options"]["public-hostname"] == BUNDLE["applications"]["updown-app"]["options"]["public-hostname"]


def test_the_bundles_store_is_s3_integrator_without_an_overlay() -> None:
    """Two app units and no storage option: related to s3-integrator, that is their shared store (the charm
    blocks with the sync-s3-credentials command until the integrator has keys, test_app_s3_integrator); the
    header gives the exact commands and the statuses shown until they are run."""
    app = BUNDLE["applications"]["updown-app"]
    assert app["num_units"] > 1 and not any(k.startswith(("storage-", "s3-", "swift-")) for k in app["options"])
    assert ["updown-app:s3-credentials", "s3-integrator:s3-credentials"] in BUNDLE["relations"]
    header = " ".join((REPO / "bundle.yaml").read_text().split("description:")[0].replace("#", " ").split())
    assert "juju deploy ./bundle.yaml juju add-secret" in header  # no --overlay
    assert "juju run s3-integrator/leader sync-s3-credentials access-key=<access key> secret-key=<secret key>" in header
    assert "waiting for s3-integrator credentials (juju run s3-integrator/leader sync-s3-credentials ...)" in header
    # the backend caches read the store updown-app publishes: no upstream-url to set by hand
    assert "cache-backend upstream-url=" not in header and "juju config cache-backend" not in header
    assert "no upstream: updown-app publishes no store endpoint" in header


def test_integration_tests_deploy_with_the_test_overlay(tmp_path: Path, monkeypatch) -> None:
    import tests.integration.test_bundle as it

    (tmp_path / "x.charm").write_text("")
    monkeypatch.setenv("UPDOWN_APP_CHARM", str(tmp_path / "x.charm"))
    monkeypatch.setenv("UPDOWN_CACHE_CHARM", str(tmp_path / "x.charm"))
    monkeypatch.setattr(it, "WITH_S3", False)
    _, overlays = it.bundle(tmp_path)
    assert overlays == [REPO / "bundle-test-overlay.yaml"]
    monkeypatch.setattr(it, "WITH_S3", True)
    path, overlays = it.bundle(tmp_path)
    assert overlays == [] and yaml.safe_load(path.read_text())["applications"]["updown-app"]["num_units"] == 2
