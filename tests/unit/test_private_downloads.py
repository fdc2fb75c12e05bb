"""Private downloads end to end: a real ``updown serve`` talking to a real (fake) SSO and store on loopback.

Two servers share one SSO and one store: one validates JWT access tokens against the JWKS, the other asks the
SSO's introspection endpoint. Users and packages differ between tests so the caches do not mix them up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support.fake_sso import FakeSso, FakeStore, SigningKey, ec_key, rsa_key, running, unsigned_token
from tests.support.server import KEY_ID, ServerProcess, make_server
from updown_app.auth.cache import TtlCache
from updown_app.auth.links import LinkError, LinkSigner, link_path, redacted_path
from updown_app.auth.store_authorizer import build_authorizer
from updown_app.core import signing
from updown_app.settings import Settings

PRIVATE = "private.localhost"
PUBLIC = "localhost"
ISSUER = "https://sso.test"
AUDIENCE = "updown"
DATA = os.urandom(300_000)
OTHER = b"another private file\n"
HMAC_KEYS = {KEY_ID: secrets.token_urlsafe(32), "store-old": secrets.token_urlsafe(32)}
LINK_KEY = secrets.token_urlsafe(32)
CLIENT_SECRET = secrets.token_urlsafe(24)
RETRY_AFTER = "7"

# Every secret the servers saw, to look for in their logs at the end.
SEEN_SECRETS: list[str] = [*HMAC_KEYS.values(), LINK_KEY, CLIENT_SECRET]


# Fixtures ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sso() -> Iterator[FakeSso]:
    fake = FakeSso("updown", CLIENT_SECRET)
    fake.keys = [rsa_key("k1"), ec_key("e1")]
    fake.default_claims = {"iss": ISSUER, "aud": AUDIENCE}
    yield from running(fake)


@pytest.fixture(scope="module")
def store() -> Iterator[FakeStore]:
    yield from running(FakeStore({KEY_ID: HMAC_KEYS[KEY_ID].encode()}))


def _common_env(store: FakeStore) -> dict[str, str]:
    return {
        **store.access_check_env(KEY_ID),
        "UPDOWN_PRIVATE__ACCESS_CHECK__TIMEOUT": "1",
        "UPDOWN_PRIVATE__SSO__TIMEOUT": "1",
        "UPDOWN_PRIVATE__SSO__ISSUER": ISSUER,
        "UPDOWN_PRIVATE__SSO__AUDIENCE": AUDIENCE,
        "UPDOWN_PRIVATE__RETRY_AFTER": RETRY_AFTER,
        "UPDOWN_PRIVATE__LINKS__KEYS": json.dumps({"l1": LINK_KEY}),
    }


def _upload(srv: ServerProcess, tmp: Path, data: bytes, package: str, name: str, **kw: Any) -> dict[str, Any]:
    path = tmp / f"{package}-{name}"
    path.write_bytes(data)
    publish = kw.pop("publish", True)
    with srv.client() as c:
        rec = c.upload(path, package=package, revision="1", filename=name, **kw)
        return c.publish(rec["id"]) if publish else rec


def _files(srv: ServerProcess, tmp: Path) -> dict[str, dict[str, Any]]:
    return {
        "public": _upload(srv, tmp, DATA, "free", "app.bin"),
        "private": _upload(srv, tmp, DATA, "paid", "app.bin", visibility="private"),
        "other": _upload(srv, tmp, OTHER, "paid2", "other.bin", visibility="private"),
        "draft": _upload(srv, tmp, b"draft", "paid", "draft.bin", visibility="private", publish=False),
    }


@pytest.fixture(scope="module")
def jwt_srv(tmp_path_factory: pytest.TempPathFactory, sso: FakeSso, store: FakeStore) -> Iterator[ServerProcess]:
    env = {
        **_common_env(store),
        "UPDOWN_PRIVATE__SSO__MODE": "jwt",
        "UPDOWN_PRIVATE__SSO__JWT__JWKS_URL": sso.url(FakeSso.JWKS),
        "UPDOWN_PRIVATE__SSO__JWT__ALGORITHMS": '["RS256", "ES256"]',
        "UPDOWN_PRIVATE__SSO__JWT__LEEWAY": "5",
        "UPDOWN_PRIVATE__SSO__JWT__JWKS_MIN_REFETCH_INTERVAL": "1",
        "UPDOWN_PRIVATE__SSO__NEGATIVE_CACHE_TTL": "1",
    }
    srv = make_server(tmp_path_factory.mktemp("jwt"), extra_env=env, keys=HMAC_KEYS).start()
    srv.files = _files(srv, tmp_path_factory.mktemp("jwt-files"))  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def intro_srv(tmp_path_factory: pytest.TempPathFactory, sso: FakeSso, store: FakeStore) -> Iterator[ServerProcess]:
    env = {
        **_common_env(store),
        **sso.introspection_env(negative_cache_ttl=2),
    }
    srv = make_server(tmp_path_factory.mktemp("intro"), extra_env=env, keys=HMAC_KEYS).start()
    srv.files = _files(srv, tmp_path_factory.mktemp("intro-files"))  # type: ignore[attr-defined]
    yield srv
    srv.stop()


# Helpers ----------------------------------------------------------------------------------------------------------


def get(
    srv: ServerProcess,
    path: str,
    token: str | None = None,
    host: str = PRIVATE,
    method: str = "GET",
    **headers: str,
) -> httpx.Response:
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    if token is not None:
        SEEN_SECRETS.append(token)
        hdrs["authorization"] = f"Bearer {token}"
    with srv.http(host=host) as http:
        return http.request(method, path, headers=hdrs)


def claims(user: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": user, "iat": now, "exp": now + 600, "jti": secrets.token_hex(8)}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


class At:
    """A time ``offset`` seconds from when the test runs (parameters are built at collection, maybe minutes
    earlier)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


def resolved(claims_: dict[str, Any]) -> dict[str, Any]:
    return {k: int(time.time()) + v.offset if isinstance(v, At) else v for k, v in claims_.items()}


def token_for(sso: FakeSso, user: str, key: SigningKey | None = None, **overrides: Any) -> str:
    return (key or sso.keys[0]).sign(claims(user, **overrides))


def assert_401(r: httpx.Response, code: str = "invalid_token") -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == code
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["cache-control"] == "private, no-store"


def assert_503(r: httpx.Response, started: float, code: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == RETRY_AFTER
    assert r.json()["error"]["code"] == code
    assert time.monotonic() - started < 5  # the configured 1 s timeout, not the slow peer's delay


def mint(srv: ServerProcess, file_id: str, user: str, expires_in: int | None = None) -> dict[str, Any]:
    fields = {"user": user, **signing.fresh_fields()}
    if expires_in is not None:
        fields["expires_in"] = str(expires_in)
    path = f"/v1/files/{file_id}/links"
    with srv.http() as http:
        r = http.post(path, data=fields, headers={"authorization": srv.sign("POST", path, fields)})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    SEEN_SECRETS.append(body["path"].split("/")[3])
    return body


# JWT access tokens ------------------------------------------------------------------------------------------------


def test_valid_jwt_allowed(jwt_srv: ServerProcess, sso: FakeSso, store: FakeStore) -> None:
    store.grants.add(("alice", "paid"))
    r = get(jwt_srv, "/paid/1/app.bin", token_for(sso, "alice"))
    assert r.status_code == 200, r.text
    assert r.content == DATA
    assert r.headers["cache-control"] == "private, no-store"
    assert r.headers["vary"] == "Authorization"
    assert r.headers["etag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    # ES256 keys work too; the allowed answer is cached per (user, package).
    before = store.count_for("alice", "paid")
    r = get(jwt_srv, "/paid/1/app.bin", token_for(sso, "alice", key=sso.keys[1]))
    assert r.status_code == 200
    assert store.count_for("alice", "paid") == before
    assert store.bad_signatures == 0


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"exp": At(-120)}, "expired"),
        ({"nbf": At(120)}, "not valid yet"),
        ({"aud": "someone-else"}, "another audience"),
        ({"iss": "https://evil.test"}, "someone else"),
        ({"exp": None}, "'exp'"),
        ({"sub": None}, "no user"),
    ],
)
def test_invalid_jwt_claims(jwt_srv: ServerProcess, sso: FakeSso, overrides: dict[str, Any], why: str) -> None:
    r = get(jwt_srv, "/paid/1/app.bin", token_for(sso, "alice", **resolved(overrides)))
    assert_401(r)
    assert why in r.json()["error"]["message"]
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_alg_none_and_algorithm_confusion(jwt_srv: ServerProcess, sso: FakeSso) -> None:
    assert_401(get(jwt_srv, "/paid/1/app.bin", unsigned_token(claims("alice"), "k1")))
    # HS256 "signed" with the RSA public key as HMAC secret (the classic key-confusion attack).
    rsa = sso.keys[0]
    public_pem = rsa.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims("alice")).encode())
    sig = b64(hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    assert_401(get(jwt_srv, "/paid/1/app.bin", f"{head}.{body}.{sig}"))
    # An ES256 token that names the RSA key, and a token whose signature was replaced.
    assert_401(get(jwt_srv, "/paid/1/app.bin", sso.keys[1].sign(claims("alice"), kid="k1")))
    good = token_for(sso, "alice")
    assert_401(get(jwt_srv, "/paid/1/app.bin", good.rsplit(".", 1)[0] + ".AAAA"))


def test_unknown_kid_refetches_jwks_rate_limited(jwt_srv: ServerProcess, sso: FakeSso, store: FakeStore) -> None:
    store.grants.add(("kim", "paid"))
    assert get(jwt_srv, "/paid/1/app.bin", token_for(sso, "kim")).status_code == 200
    time.sleep(1.1)  # past jwks_min_refetch_interval
    new_key = rsa_key("k2")
    fetches = sso.count(FakeSso.JWKS)
    assert_401(get(jwt_srv, "/paid/1/app.bin", token_for(sso, "kim", key=new_key)))
    assert sso.count(FakeSso.JWKS) == fetches + 1  # an unknown kid made it look again
    assert_401(get(jwt_srv, "/paid/1/app.bin", token_for(sso, "kim", key=new_key)))
    assert sso.count(FakeSso.JWKS) == fetches + 1  # ... but not again so soon
    sso.keys.append(new_key)  # the SSO rotates keys
    try:
        time.sleep(1.1)
        r = get(jwt_srv, "/paid/1/app.bin", token_for(sso, "kim", key=new_key))
        assert r.status_code == 200, r.text
        assert sso.count(FakeSso.JWKS) == fetches + 2
    finally:
        sso.keys.remove(new_key)


def test_jwt_keeps_working_offline_when_sso_is_down(jwt_srv: ServerProcess, sso: FakeSso, store: FakeStore) -> None:
    store.grants.add(("olga", "paid"))
    assert get(jwt_srv, "/paid/1/app.bin", token_for(sso, "olga")).status_code == 200
    sso.stop()
    try:
        # Known keys verify offline; an unknown kid cannot be decided: 503, not 401 and not a download.
        assert get(jwt_srv, "/paid/1/app.bin", token_for(sso, "olga")).status_code == 200
        time.sleep(1.1)
        started = time.monotonic()
        r = get(jwt_srv, "/paid/1/app.bin", token_for(sso, "olga", key=rsa_key("k9")))
        assert_503(r, started, "sso_unavailable")
    finally:
        sso.start()


@pytest.mark.parametrize(
    "header",
    ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer a b", "Bearer tok\u00e9n", "Token abc", "Bearer " + "a" * 9000],
)
def test_malformed_authorization_header(jwt_srv: ServerProcess, header: str) -> None:
    with jwt_srv.http(host=PRIVATE) as http:
        r = http.get("/paid/1/app.bin", headers={"authorization": header.encode("utf-8")})  # type: ignore[dict-item]
    assert_401(r, "invalid_request")


def test_missing_or_garbage_token(jwt_srv: ServerProcess) -> None:
    assert_401(get(jwt_srv, "/paid/1/app.bin"), "missing_token")
    assert_401(get(jwt_srv, "/paid/1/app.bin", "not-a-jwt"))
    # Authentication comes first: an unknown file without a token is 401, not 404.
    assert_401(get(jwt_srv, "/paid/1/nothing.bin"), "missing_token")


# The store's access check -----------------------------------------------------------------------------------------


def test_denied_then_allowed_after_denied_ttl(jwt_srv: ServerProcess, sso: FakeSso, store: FakeStore) -> None:
    r = get(jwt_srv, "/paid/1/app.bin", token_for(sso, "bob"))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert r.headers["cache-control"] == "private, no-store"
    store.grants.add(("bob", "paid"))  # bob buys the package
    assert get(jwt_srv, "/paid/1/app.bin", token_for(sso, "bob")).status_code == 403  # denied is cached ...
    time.sleep(1.1)  # ... for denied_ttl (1 s) only
    assert get(jwt_srv, "/paid/1/app.bin", token_for(sso, "bob")).status_code == 200
    # The grant is per package.
    assert get(jwt_srv, "/paid2/1/other.bin", token_for(sso, "bob")).status_code == 403
    assert {"user": "bob", "package": "paid"}.items() <= store.checks[-2].items()
    assert store.bad_signatures == 0


def test_public_file_on_private_host_needs_a_token_but_no_grant(jwt_srv: ServerProcess, sso: FakeSso) -> None:
    assert_401(get(jwt_srv, "/free/1/app.bin"), "missing_token")
    r = get(jwt_srv, "/free/1/app.bin", token_for(sso, "nobody"))
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["cache-control"] == "private, no-store"


@pytest.mark.parametrize("mode", ["down", "slow", "failing"])
def test_store_unavailable_fails_closed(jwt_srv: ServerProcess, sso: FakeSso, store: FakeStore, mode: str) -> None:
    user = f"carol-{mode}"
    store.grants.add((user, "paid"))
    if mode == "down":
        store.stop()
    elif mode == "slow":
        store.delay = 3.0
    else:
        store.fail_status = 500
    try:
        started = time.monotonic()
        r = get(jwt_srv, "/paid/1/app.bin", token_for(sso, user))
        assert_503(r, started, "store_unavailable")
        assert r.headers["cache-control"] == "private, no-store"
    finally:
        store.delay, store.fail_status = 0.0, None
        if mode == "down":
            store.start()
    # The failure was not cached: once the store is back, the user gets the file.
    assert get(jwt_srv, "/paid/1/app.bin", token_for(sso, user)).status_code == 200


# What the private host serves -------------------------------------------------------------------------------------


def test_range_and_head_like_the_public_host(jwt_srv: ServerProcess, sso: FakeSso, store: FakeStore) -> None:
    store.grants.add(("rita", "paid"))
    token = token_for(sso, "rita")
    for method, headers in [
        ("GET", {"range": "bytes=100-199"}),
        ("GET", {"range": "bytes=-50"}),
        ("GET", {"range": "bytes=299990-"}),
        ("GET", {"range": "bytes=400000-"}),
        ("HEAD", {}),
        ("HEAD", {"range": "bytes=0-9"}),
    ]:
        pub = get(jwt_srv, "/free/1/app.bin", host=PUBLIC, method=method, **headers)
        priv = get(jwt_srv, "/paid/1/app.bin", token, method=method, **headers)
        assert priv.status_code == pub.status_code, (method, headers)
        assert priv.content == pub.content
        for name in ("content-range", "content-length", "etag", "accept-ranges"):
            assert priv.headers.get(name) == pub.headers.get(name), name
        if pub.status_code != 416:
            # Two files published moments apart: both dated, not necessarily within the same second.
            assert "last-modified" in priv.headers and "last-modified" in pub.headers
    etag = get(jwt_srv, "/paid/1/app.bin", token, method="HEAD").headers["etag"]
    r = get(jwt_srv, "/paid/1/app.bin", token, if_none_match=etag)
    assert r.status_code == 304 and r.headers["cache-control"] == "private, no-store"
    r = get(jwt_srv, "/paid/1/app.bin", token, range="bytes=0-9", if_range=etag)
    assert r.status_code == 206 and r.content == DATA[:10]


def test_private_file_is_404_on_the_public_host(jwt_srv: ServerProcess, sso: FakeSso, store: FakeStore) -> None:
    store.grants.add(("pat", "paid"))
    missing = get(jwt_srv, "/paid/1/nothing.bin", host=PUBLIC)
    for path in ("/paid/1/app.bin", "/paid/1/draft.bin"):
        r = get(jwt_srv, path, token_for(sso, "pat"), host=PUBLIC)
        assert r.status_code == 404
        assert r.json() == missing.json()


def test_unpublished_private_file_is_404_for_everyone(jwt_srv: ServerProcess, sso: FakeSso, store: FakeStore) -> None:
    store.grants.add(("uma", "paid"))
    r = get(jwt_srv, "/paid/1/draft.bin", token_for(sso, "uma"))
    assert r.status_code == 404
    assert r.headers["cache-control"] == "private, no-store"
    # Unpublishing takes a file away at once, even from a user who has it.
    file_id = jwt_srv.files["other"]["id"]  # type: ignore[attr-defined]
    store.grants.add(("uma", "paid2"))
    assert get(jwt_srv, "/paid2/1/other.bin", token_for(sso, "uma")).status_code == 200
    with jwt_srv.client() as c:
        c.unpublish(file_id)
    try:
        assert get(jwt_srv, "/paid2/1/other.bin", token_for(sso, "uma")).status_code == 404
    finally:
        with jwt_srv.client() as c:
            c.publish(file_id)


# Introspection ----------------------------------------------------------------------------------------------------


def test_introspection_valid_and_cached(intro_srv: ServerProcess, sso: FakeSso, store: FakeStore) -> None:
    store.grants.add(("ivan", "paid"))
    token = sso.issue(secrets.token_urlsafe(32), "ivan")
    before = sso.count(FakeSso.INTROSPECT)
    r = get(intro_srv, "/paid/1/app.bin", token)
    assert r.status_code == 200, r.text
    assert r.content == DATA
    assert get(intro_srv, "/paid/1/app.bin", token, range="bytes=0-0").status_code == 206
    assert sso.count(FakeSso.INTROSPECT) == before + 1
    assert sso.bad_client_auth == 0


def test_introspection_revoked_after_cache(intro_srv: ServerProcess, sso: FakeSso, store: FakeStore) -> None:
    store.grants.add(("rose", "paid"))
    token = sso.issue(secrets.token_urlsafe(32), "rose")
    assert get(intro_srv, "/paid/1/app.bin", token).status_code == 200
    sso.revoke(token)
    deadline = time.monotonic() + 3  # cache_ttl is 1 s
    while time.monotonic() < deadline:
        r = get(intro_srv, "/paid/1/app.bin", token)
        if r.status_code != 200:
            break
        time.sleep(0.1)
    assert_401(r)
    assert "not active" in r.json()["error"]["message"]


def test_introspection_cache_never_outlives_the_token(intro_srv: ServerProcess, sso: FakeSso, store: FakeStore) -> None:
    store.grants.add(("ella", "paid"))
    token = sso.issue(secrets.token_urlsafe(32), "ella", lifetime=1.5)
    assert get(intro_srv, "/paid/1/app.bin", token).status_code == 200
    time.sleep(1.6)
    # The SSO still calls it active here; its own exp is what ends it.
    assert_401(get(intro_srv, "/paid/1/app.bin", token))


def test_access_decision_cached_no_longer_than_the_token_lives(
    jwt_srv: ServerProcess, sso: FakeSso, store: FakeStore
) -> None:
    store.grants.add(("tina", "paid"))
    short = token_for(sso, "tina", exp=int(time.time()) + 2)
    assert get(jwt_srv, "/paid/1/app.bin", short).status_code == 200
    assert get(jwt_srv, "/paid/1/app.bin", token_for(sso, "tina")).status_code == 200
    assert store.count_for("tina", "paid") == 1  # allowed_ttl is 60 s ...
    time.sleep(2.1)
    assert get(jwt_srv, "/paid/1/app.bin", token_for(sso, "tina")).status_code == 200
    assert store.count_for("tina", "paid") == 2  # ... but the answer went with the token that earned it


def test_concurrent_requests_share_one_sso_and_store_call(
    intro_srv: ServerProcess, sso: FakeSso, store: FakeStore
) -> None:
    store.grants.add(("paula", "paid"))
    token = sso.issue(secrets.token_urlsafe(32), "paula")
    before = sso.count(FakeSso.INTROSPECT)
    sso.delay = store.delay = 0.4  # slow, but within the 1 s timeouts
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(
                pool.map(lambda i: get(intro_srv, "/paid/1/app.bin", token, range=f"bytes={i}-{i}"), range(8))
            )
    finally:
        sso.delay = store.delay = 0.0
    assert [r.status_code for r in results] == [206] * 8
    assert [r.content for r in results] == [DATA[i : i + 1] for i in range(8)]
    assert sso.count(FakeSso.INTROSPECT) == before + 1
    assert store.count_for("paula", "paid") == 1


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"aud": "someone-else"}, "another audience"),
        ({"iss": "https://evil.test"}, "someone else"),
        ({"nbf": At(600)}, "not valid yet"),
    ],
)
def test_introspection_claims_checked(intro_srv: ServerProcess, sso: FakeSso, extra: dict[str, Any], why: str) -> None:
    token = sso.issue(secrets.token_urlsafe(32), "ian", **resolved(extra))
    r = get(intro_srv, "/paid/1/app.bin", token)
    assert_401(r)
    assert why in r.json()["error"]["message"]


def test_introspection_inactive_token_negatively_cached(intro_srv: ServerProcess, sso: FakeSso) -> None:
    token = secrets.token_urlsafe(32)
    before = sso.count(FakeSso.INTROSPECT)
    assert_401(get(intro_srv, "/paid/1/app.bin", token))
    assert_401(get(intro_srv, "/paid/1/app.bin", token))
    assert sso.count(FakeSso.INTROSPECT) == before + 1  # remembered for negative_cache_ttl


@pytest.mark.parametrize("mode", ["down", "slow", "failing"])
def test_sso_unavailable_fails_closed(intro_srv: ServerProcess, sso: FakeSso, store: FakeStore, mode: str) -> None:
    user = f"sam-{mode}"
    store.grants.add((user, "paid"))
    token = sso.issue(secrets.token_urlsafe(32), user)
    if mode == "down":
        sso.stop()
    elif mode == "slow":
        sso.delay = 3.0
    else:
        sso.fail_status = 500
    try:
        started = time.monotonic()
        r = get(intro_srv, "/paid/1/app.bin", token)
        assert_503(r, started, "sso_unavailable")
        assert r.headers["cache-control"] == "private, no-store"
    finally:
        sso.delay, sso.fail_status = 0.0, None
        if mode == "down":
            sso.start()
    assert get(intro_srv, "/paid/1/app.bin", token).status_code == 200  # not cached


# Download links ---------------------------------------------------------------------------------------------------


def test_link_download_range_head(jwt_srv: ServerProcess) -> None:
    rec = jwt_srv.files["private"]  # type: ignore[attr-defined]
    link = mint(jwt_srv, rec["id"], "lena", expires_in=600)
    assert link["path"].startswith("/-/link/l1.") and link["path"].endswith("/paid/1/app.bin")
    assert "?" not in link["url"] and link["url"].endswith(link["path"])
    assert link["url"].startswith(f"https://{PRIVATE}:{jwt_srv.port}/")
    r = get(jwt_srv, link["path"])
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["cache-control"] == "private, no-store"
    assert r.headers["vary"] == "Authorization"
    assert r.headers["referrer-policy"] == "no-referrer"
    r = get(jwt_srv, link["path"], range="bytes=10-19")
    assert r.status_code == 206 and r.content == DATA[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(DATA)}"
    r = get(jwt_srv, link["path"], method="HEAD")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == str(len(DATA))


def _local_link(srv: ServerProcess, name: str, user: str, expires_at: float) -> str:
    rec = srv.files[name]  # type: ignore[attr-defined]
    token = LinkSigner({"l1": LINK_KEY.encode()}).mint(rec["id"], user, int(expires_at))
    SEEN_SECRETS.append(token)
    return link_path(token, rec["package"], rec["revision"], rec["filename"])


def test_link_expired(jwt_srv: ServerProcess) -> None:
    r = get(jwt_srv, _local_link(jwt_srv, "private", "lena", time.time() - 1))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "expired_link"
    assert r.headers["cache-control"] == "private, no-store"
    short = mint(jwt_srv, jwt_srv.files["private"]["id"], "lena", expires_in=1)  # type: ignore[attr-defined]
    time.sleep(1.1)
    assert get(jwt_srv, short["path"]).status_code == 403


def test_link_tampered(jwt_srv: ServerProcess) -> None:
    path = _local_link(jwt_srv, "private", "lena", time.time() + 600)
    token = path.split("/")[3]
    kid, payload, sig = token.split(".")
    forged_payload = (
        base64.urlsafe_b64encode(
            json.dumps({"f": jwt_srv.files["private"]["id"], "u": "mallory", "e": int(time.time()) + 10**6}).encode()  # type: ignore[attr-defined]
        )
        .rstrip(b"=")
        .decode()
    )
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    other_key = LinkSigner({"l1": b"not the key"}).mint(jwt_srv.files["private"]["id"], "lena", int(time.time()) + 600)  # type: ignore[attr-defined]
    for bad in (
        f"{kid}.{forged_payload}.{sig}",
        f"{kid}.{payload}.{flipped}",
        f"l2.{payload}.{sig}",
        other_key,
        "garbage",
        f"{kid}.{payload}",
    ):
        r = get(jwt_srv, path.replace(token, bad))
        assert r.status_code == 403, bad
        assert r.json()["error"]["code"] == "invalid_link"
    assert get(jwt_srv, path).status_code == 200


def test_link_for_another_file(jwt_srv: ServerProcess) -> None:
    path = _local_link(jwt_srv, "private", "lena", time.time() + 600)
    token = path.split("/")[3]
    r = get(jwt_srv, f"/-/link/{token}/paid2/1/other.bin")
    assert r.status_code == 403
    assert "another file" in r.json()["error"]["message"]
    assert get(jwt_srv, f"/-/link/{token}/paid/1/nothing.bin").status_code == 404


def test_link_on_public_host_is_404(jwt_srv: ServerProcess) -> None:
    path = _local_link(jwt_srv, "private", "lena", time.time() + 600)
    missing = get(jwt_srv, "/paid/1/nothing.bin", host=PUBLIC)
    r = get(jwt_srv, path, host=PUBLIC)
    assert r.status_code == 404
    assert r.json() == missing.json()
    assert get(jwt_srv, path, host="other.example").status_code == 404


def test_link_for_unpublished_file_is_404(jwt_srv: ServerProcess) -> None:
    r = get(jwt_srv, _local_link(jwt_srv, "draft", "lena", time.time() + 600))
    assert r.status_code == 404


def test_minting_needs_a_valid_signature_and_fields(jwt_srv: ServerProcess) -> None:
    file_id = jwt_srv.files["private"]["id"]  # type: ignore[attr-defined]
    path = f"/v1/files/{file_id}/links"
    with jwt_srv.http() as http:
        assert http.post(path, data={"user": "x"}).status_code == 401
        fields = {"user": "x", **signing.fresh_fields()}
        wrong = signing.authorization_header(KEY_ID, b"wrong secret", "POST", path, fields)
        assert http.post(path, data=fields, headers={"authorization": wrong}).status_code == 401
        for bad, code in [
            ({"user": ""}, "invalid_user"),
            ({"user": "x", "expires_in": "0"}, "invalid_expires_in"),
            ({"user": "x", "expires_in": str(10**9)}, "invalid_expires_in"),
            ({"user": "x", "file": "y"}, "unknown_field"),
        ]:
            fields = {**bad, **signing.fresh_fields()}
            r = http.post(path, data=fields, headers={"authorization": jwt_srv.sign("POST", path, fields)})
            assert r.status_code == 400 and r.json()["error"]["code"] == code
        missing = "/v1/files/nope/links"
        fields = {"user": "x", **signing.fresh_fields()}
        r = http.post(missing, data=fields, headers={"authorization": jwt_srv.sign("POST", missing, fields)})
        assert r.status_code == 404


# Units ------------------------------------------------------------------------------------------------------------


def test_link_signer_unit() -> None:
    signer = LinkSigner({"a": b"k1", "b": b"k2"}, "b")
    token = signer.mint("f1", "u ü", 2_000)
    link = signer.verify(token, now=1_000)
    assert (link.file_id, link.user, link.expires_at, link.key_id) == ("f1", "u ü", 2_000, "b")
    with pytest.raises(LinkError, match="expired"):
        signer.verify(token, now=2_000)
    # Rotation: a signer that only verifies with the old key still accepts its links.
    assert LinkSigner({"b": b"k2"}).verify(token, now=0).user == "u ü"
    with pytest.raises(LinkError):
        LinkSigner({"a": b"k1"}).verify(token, now=0)
    assert redacted_path(link_path(token, "p", "1", "f.bin")) == "/-/link/<redacted>/p/1/f.bin"


def test_documented_worked_examples() -> None:
    """docs/private-downloads.md shows these exact values to the store team."""
    fields = {"user": "alice", "package": "paid-app", "timestamp": "1700000000", "nonce": "0123456789abcdefABCDEF"}
    header = signing.authorization_header(
        "updown-1", b"example-secret-do-not-use", "POST", "/api/v1/access-check", fields
    )
    assert header.endswith("KeyId=updown-1, Signature=a682fd231f6fb3233543768f6b2ec4259efc48ef5f9d63acd91f98f2774f0c47")
    token = LinkSigner({"l1": b"example-link-key-do-not-use"}).mint(
        "3f2a9c1e5b7d4a60b8e1c2d3f4a5b6c7", "alice", 1700003600
    )
    assert token == (
        "l1.eyJmIjoiM2YyYTljMWU1YjdkNGE2MGI4ZTFjMmQzZjRhNWI2YzciLCJ1IjoiYWxpY2UiLCJlIjoxNzAwMDAzNjAwfQ"
        ".K1Quvp1QqfVH_X7mXAOKXt4M0a4irlcxaMWKXv2WMxo"
    )
    docs = (Path(__file__).parents[2] / "docs" / "private-downloads.md").read_text()
    assert token in docs and "a682fd231f6fb3233543768f6b2ec4259efc48ef5f9d63acd91f98f2774f0c47" in docs


def test_ttl_cache_unit() -> None:
    cache: TtlCache[str, int] = TtlCache(2)
    cache.set("a", 1, expires_at=10, now=0)
    cache.set("b", 2, expires_at=10, now=0)
    assert cache.get("a", now=5) == 1
    cache.set("c", 3, expires_at=10, now=0)  # evicts b, the least recently used
    assert cache.get("b", now=5) is None and cache.get("c", now=5) == 3
    assert cache.get("a", now=10) is None  # expired
    cache.set("d", 4, expires_at=1, now=2)  # already expired: not stored
    assert cache.get("d", now=2) is None


@pytest.mark.parametrize(
    "env",
    [
        {"UPDOWN_PRIVATE__SSO__MODE": "jwt"},
        {"UPDOWN_PRIVATE__ACCESS_CHECK__URL": "http://127.0.0.1:1/x"},
        {"UPDOWN_PRIVATE__SSO__JWT__JWKS_URL": "http://x/jwks", "UPDOWN_PRIVATE__SSO__JWT__ALGORITHMS": '["none"]'},
        {"UPDOWN_PRIVATE__SSO__JWT__JWKS_URL": "http://x/jwks", "UPDOWN_PRIVATE__SSO__JWT__ALGORITHMS": '["HS256"]'},
        {"UPDOWN_PRIVATE__LINKS__KEYS": '{"a": "x", "b": "y"}'},
    ],
)
def test_settings_refuse_incomplete_or_unsafe_config(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError):
        Settings()


def test_documented_toml_example_loads(tmp_path: Path) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "private-downloads.md").read_text()
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "updown.toml"
    config.write_text('hmac_keys = { updown-1 = "s" }\n' + example)
    settings = Settings.load(config)
    assert settings.private.enabled and settings.private.sso.mode == "jwt"
    authorizer = build_authorizer(settings)
    assert authorizer is not None and authorizer.access.key_id == "updown-1"


def test_build_authorizer_needs_a_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_authorizer(Settings()) is None  # not configured: the app keeps DenyAll
    monkeypatch.setenv("UPDOWN_PRIVATE__SSO__MODE", "introspection")
    monkeypatch.setenv("UPDOWN_PRIVATE__SSO__INTROSPECTION__URL", "http://127.0.0.1:1/i")
    monkeypatch.setenv("UPDOWN_PRIVATE__SSO__INTROSPECTION__CLIENT_ID", "updown")
    monkeypatch.setenv("UPDOWN_PRIVATE__SSO__INTROSPECTION__CLIENT_SECRET", "x")
    monkeypatch.setenv("UPDOWN_PRIVATE__ACCESS_CHECK__URL", "http://127.0.0.1:1/x")
    monkeypatch.setenv("UPDOWN_HMAC_KEYS", '{"a": "1", "b": "2"}')
    with pytest.raises(ValueError, match="key_id"):
        build_authorizer(Settings())  # which of two keys?
    monkeypatch.setenv("UPDOWN_PRIVATE__ACCESS_CHECK__KEY_ID", "c")
    with pytest.raises(ValueError, match="no configured HMAC key"):
        build_authorizer(Settings())
    monkeypatch.setenv("UPDOWN_PRIVATE__ACCESS_CHECK__KEY_ID", "b")
    authorizer = build_authorizer(Settings())
    assert authorizer is not None and authorizer.access.key_id == "b"


def test_secret_settings_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPDOWN_PRIVATE__SSO__MODE", "introspection")
    monkeypatch.setenv("UPDOWN_PRIVATE__SSO__INTROSPECTION__URL", "http://127.0.0.1:1/i")
    monkeypatch.setenv("UPDOWN_PRIVATE__SSO__INTROSPECTION__CLIENT_ID", "updown")
    monkeypatch.setenv("UPDOWN_PRIVATE__SSO__INTROSPECTION__CLIENT_SECRET", "s3cr3t-value")
    monkeypatch.setenv("UPDOWN_PRIVATE__ACCESS_CHECK__URL", "http://127.0.0.1:1/x")
    monkeypatch.setenv("UPDOWN_PRIVATE__LINKS__KEYS", '{"l": "link-s3cr3t"}')
    text = repr(Settings()) + str(Settings().model_dump())
    assert "s3cr3t" not in text


# Last: nothing secret reached the logs ----------------------------------------------------------------------------


def test_no_secret_in_logs(jwt_srv: ServerProcess, intro_srv: ServerProcess) -> None:
    logs = jwt_srv.log() + intro_srv.log()
    assert "private download denied" in logs and "store access check unavailable" in logs
    assert "/-/link/<redacted>/paid/1/app.bin" in logs
    assert "/-/link/l1." not in logs
    leaked = [s[:12] + "..." for s in set(SEEN_SECRETS) if len(s) >= 16 and s in logs]
    assert not leaked
    for token in set(SEEN_SECRETS):
        if token.count(".") == 2:  # JWTs and link tokens: their signature part alone must not appear either
            sig = token.rsplit(".", 1)[1]
            assert len(sig) < 16 or sig not in logs
