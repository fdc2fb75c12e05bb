"""bundle-cos-overlay.yaml against the bundle and the charms: its collector joins the cos-agent endpoint of every
application of the bundle that has one, on the interface both sides declare."""

from __future__ import annotations

import yaml

from tests.charms.test_app_bundle import BUNDLE, REPO, endpoint, spec

OVERLAY = yaml.safe_load((REPO / "bundle-cos-overlay.yaml").read_text())
# opentelemetry-collector 2/stable's endpoint we use (its charmcraft.yaml is not in this repository)
COLLECTOR = {"cos-agent": ("requires", "cos_agent")}


def test_every_application_with_cos_agent_is_related() -> None:
    ours = {app for app in BUNDLE["applications"] if "cos-agent" in spec(app).get("provides", {})}
    assert ours == {"updown-app", "cache-frontend", "cache-backend"}
    related = set()
    for a, b in OVERLAY["relations"]:
        (app_a, ep_a), (app_b, ep_b) = a.split(":"), b.split(":")
        assert app_a == "otelcol" and app_a in OVERLAY["applications"]
        side, interface = endpoint(app_b, ep_b)
        assert (side, interface) == ("provides", COLLECTOR[ep_a][1]), (a, b)
        related.add(app_b)
    assert related == ours


def test_the_collector_is_a_subordinate_from_the_current_track() -> None:
    collector = OVERLAY["applications"]["otelcol"]
    assert collector["charm"] == "opentelemetry-collector" and collector["channel"] == "2/stable"
    assert "num_units" not in collector  # a subordinate: it has a unit on each principal's machine
