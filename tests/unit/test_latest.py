"""Channels and "latest" URLs through a real server: publish into channels, the redirect to the newest file, promotion,
unpublish, bad channel lists changing nothing, and the ban of a package's latest URLs on every frontend unit."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import KEY_ID, ServerProcess, make_server
from tests.unit.test_cache_purge import BanRecorder
from updown_app.core import signing


@pytest.fixture(scope="module")
def recorder() -> Iterator[BanRecorder]:
    rec = BanRecorder()
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, recorder: BanRecorder) -> Iterator[ServerProcess]:
    server = make_server(
        tmp_path_factory.mktemp("latest"),
        extra_env={
            "UPDOWN_CACHES__FRONTENDS": json.dumps([f"http://127.0.0.1:{recorder.port}"]),
            "UPDOWN_LATEST_MAX_AGE": "7",
            "UPDOWN_LOOKUP_CACHE_TTL": "0",
        },
    ).start()
    yield server
    server.stop()


def upload(srv: ServerProcess, tmp: Path, package: str, revision: str, name: str) -> str:
    path = tmp / name
    path.write_bytes(f"{package} {revision} {name}".encode())
    with srv.client() as c:
        return str(c.upload(path, package=package, revision=revision)["id"])


def latest(srv: ServerProcess, url: str) -> httpx.Response:
    with srv.http() as http:
        return http.get(url)


def test_latest_redirects_to_the_newest_file_of_the_channel(srv: ServerProcess, tmp_path: Path) -> None:
    one = upload(srv, tmp_path, "app", "1", "app_1_amd64.snap")
    two = upload(srv, tmp_path, "app", "2", "app_2_amd64.snap")
    arm = upload(srv, tmp_path, "app", "2", "app_2_arm64.snap")
    with srv.client() as c:
        assert c.publish(one, ["stable", "candidate"])["channels"] == ["candidate", "stable"]
        time.sleep(0.01)
        assert c.publish(two, ["candidate"])["channels"] == ["candidate"]
        time.sleep(0.01)
        c.publish(arm, ["candidate"])

    r = latest(srv, "/app/stable/latest/*_amd64.snap")
    assert r.status_code == 302
    assert r.headers["location"] == "/app/1/app_1_amd64.snap"
    assert r.headers["cache-control"] == "public, max-age=7"
    assert latest(srv, "/app/candidate/latest/*_amd64.snap").headers["location"] == "/app/2/app_2_amd64.snap"
    assert latest(srv, "/app/candidate/latest/*.snap").headers["location"] == "/app/2/app_2_arm64.snap"
    assert latest(srv, "/app/candidate/latest/app_1_amd64.snap").headers["location"] == "/app/1/app_1_amd64.snap"
    # The redirect target downloads.
    with srv.http() as http:
        assert (
            http.get("/app/candidate/latest/*_amd64.snap", follow_redirects=True).content == b"app 2 app_2_amd64.snap"
        )

    # Promotion: revision 2 (already published) moves to stable too.
    with srv.client() as c:
        assert c.publish(two, ["candidate", "stable"])["channels"] == ["candidate", "stable"]
    assert latest(srv, "/app/stable/latest/*_amd64.snap").headers["location"] == "/app/2/app_2_amd64.snap"
    # Unpublishing falls back to the previous file.
    with srv.client() as c:
        c.unpublish(two)
    assert latest(srv, "/app/stable/latest/*_amd64.snap").headers["location"] == "/app/1/app_1_amd64.snap"
    # Out of every channel.
    with srv.client() as c:
        assert c.publish(one, [])["channels"] == []
    assert latest(srv, "/app/stable/latest/*_amd64.snap").status_code == 404


def test_no_match_unknown_channel_private_file_and_private_host_are_404(srv: ServerProcess, tmp_path: Path) -> None:
    fid = upload(srv, tmp_path, "quiet", "1", "q.bin")
    with srv.client() as c:
        c.publish(fid, ["edge"])
    assert latest(srv, "/quiet/edge/latest/q.bin").status_code == 302
    for url in ("/quiet/edge/latest/*.snap", "/quiet/stable/latest/q.bin", "/quiet/Bad_Channel/latest/q.bin"):
        r = latest(srv, url)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    with srv.http(host="private.localhost") as http:
        assert http.get("/quiet/edge/latest/q.bin").status_code == 404


def test_publish_without_channels_keeps_working_and_keeps_them(srv: ServerProcess, tmp_path: Path) -> None:
    fid = upload(srv, tmp_path, "plain", "1", "p.bin")
    with srv.client() as c:
        body = c.publish(fid)
        assert body["state"] == "published" and body["channels"] == []
        c.publish(fid, ["beta"])
        c.unpublish(fid)
        assert c.publish(fid)["channels"] == ["beta"]
        assert c.info(fid)["channels"] == ["beta"]


@pytest.mark.parametrize(
    "value", ["Stable", "a,,b", "stable,stable", "stable, edge", "x" * 65, ",".join(f"c{i}" for i in range(17))]
)
def test_bad_channel_list_is_refused_and_changes_nothing(srv: ServerProcess, tmp_path: Path, value: str) -> None:
    fid = upload(srv, tmp_path, "refused", re.sub(r"[^a-z0-9]", "", value)[:20] or "r", "r.bin")
    path = f"/v1/files/{fid}/publish"
    fields = {"channels": value, **signing.fresh_fields()}
    with srv.http() as http:
        r = http.post(path, data=fields, headers={"authorization": srv.sign("POST", path, fields)})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_channel"
    with srv.client() as c:
        info = c.info(fid)
    assert info["state"] == "unpublished" and info["channels"] == []


def test_channels_field_is_signed(srv: ServerProcess, tmp_path: Path) -> None:
    fid = upload(srv, tmp_path, "tamper", "1", "t.bin")
    path = f"/v1/files/{fid}/publish"
    fields = {"channels": "edge", **signing.fresh_fields()}
    auth = srv.sign("POST", path, fields, KEY_ID)
    with srv.http() as http:
        r = http.post(path, data={**fields, "channels": "stable"}, headers={"authorization": auth})
    assert r.status_code == 401
    with srv.client() as c:
        assert c.info(fid)["state"] == "unpublished"


def test_a_change_bans_the_packages_latest_urls_before_answering(
    srv: ServerProcess, recorder: BanRecorder, tmp_path: Path
) -> None:
    fid = upload(srv, tmp_path, "ban+me", "1", "b.bin")
    recorder.bans.clear()
    with srv.client() as c:
        c.publish(fid, ["stable"])
    regexes = [ban for _, _, ban in recorder.bans]
    assert any(re.search(rx, "/ban%2Bme/stable/latest/*.bin?x=1") for rx in regexes), regexes
    assert not any(re.search(rx, "/ban+mex/stable/latest/b.bin") for rx in regexes)
    assert not any(re.search(rx, "/ban+me/1/b.bin") for rx in regexes)
    # Idempotent publish with the same channels: nothing changed, nothing banned.
    recorder.bans.clear()
    with srv.client() as c:
        c.publish(fid, ["stable"])
    assert recorder.bans == []


def test_files_in_no_channel_ban_nothing_leaving_the_last_channel_does(
    srv: ServerProcess, recorder: BanRecorder, tmp_path: Path
) -> None:
    fid = upload(srv, tmp_path, "nochan", "1", "n.bin")

    def latest_bans() -> int:
        return sum(1 for _, _, ban in recorder.bans if "/latest/" in ban)

    recorder.bans.clear()
    with srv.client() as c:
        c.publish(fid)
        c.unpublish(fid)
        assert latest_bans() == 0
        c.publish(fid, ["edge"])
        assert latest_bans() == 1
        c.publish(fid, [])  # out of its last channel: the edge latest URL changed
        assert latest_bans() == 2
