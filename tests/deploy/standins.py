"""The applications of bundle.yaml that the rehearsal does not run as charms, answering their relations as the
real charms do:

- postgresql (16/stable): the data_interfaces v0 provider. For a requirer's `database` (and
  `requested-secrets`) it creates a user `relation-<id>` with a random password and the database on the real
  PostgreSQL server (the test one, forwarded onto the bridge), and answers in its application databag with
  `endpoints`, `database`, `version`, `secret-user` (username, password, uris) and `secret-tls` (tls, tls-ca),
  those secrets granted to the requirer, as the charm writes them.
- self-signed-certificates (1/stable): the tls-certificates v4 provider. Each CSR a requirer unit lists in
  `certificate_signing_requests` is signed by the rehearsal's CA and answered in the provider's application
  databag `certificates` (certificate, ca, chain, the CSR it answers).
- s3-integrator (1/stable): the charms.data_platform_libs.v0.s3 provider, configured (endpoint, path URI style,
  region, `tls-ca-chain` as the JSON list of PEM certificates it makes of its base64 option). Once the requirer
  wrote `bucket` it answers with those and the bucket (made on the test Swift, as an operator makes it); the keys
  only come with `sync` (its `sync-s3-credentials` action), as `access-key` and `secret-key` in the databag.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.deploy.model import Relation

if TYPE_CHECKING:
    from tests.deploy.driver import Driver


class PostgresProvider:
    def __init__(self, admin_url: str, endpoint: str) -> None:
        self.admin_url = admin_url.replace("postgresql+asyncpg://", "postgresql://")
        self.endpoint = endpoint  # host:port where the units reach the server
        self.created: list[tuple[str, str]] = []

    def react(self, driver: Driver, rel: Relation, requirer: str) -> None:
        request = rel.app_data.get(requirer, {})
        name = request.get("database")
        mine = rel.app_data.setdefault("postgresql", {})
        if not name or mine.get("database") == name:
            return
        user, password = f"relation-{rel.id}", secrets.token_urlsafe(24)
        asyncio.run(self._create(user, password, name))
        self.created.append((user, name))
        user_secret = driver.model.add_secret(
            "postgresql",
            {
                "username": user,
                "password": password,
                "uris": (f"postgresql://{user}:{password}@{self.endpoint}/{name}"),
            },
        )
        tls_secret = driver.model.add_secret("postgresql", {"tls": "False", "tls-ca": ""})
        for s in (user_secret, tls_secret):
            s.granted.add(requirer)
        mine.update(
            {
                "data": json.dumps({"database": name, "requested-secrets": request.get("requested-secrets", "")}),
                "database": name,
                "endpoints": self.endpoint,
                "version": "16.10",
                "secret-user": user_secret.id,
                "secret-tls": tls_secret.id,
            }
        )
        driver.standin_wrote(rel, "postgresql")

    async def _create(self, user: str, password: str, database: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await conn.execute(f'DROP ROLE IF EXISTS "{user}"')
            await conn.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
            await conn.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
        finally:
            await conn.close()

    def drop(self) -> None:
        async def run() -> None:
            import asyncpg

            conn = await asyncpg.connect(self.admin_url)
            try:
                for user, database in self.created:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                    await conn.execute(f'DROP ROLE IF EXISTS "{user}"')
            finally:
                await conn.close()

        if self.created:
            asyncio.run(run())


class CertificatesProvider:
    def __init__(self, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
        self.ca, self.ca_key = ca, ca_key
        self.signed: dict[str, dict[str, object]] = {}

    def react(self, driver: Driver, rel: Relation, requirer: str) -> None:
        wanted = []
        for unit in driver.model.apps[requirer].units:
            raw = rel.unit_data.get(unit, {}).get("certificate_signing_requests")
            wanted += [r["certificate_signing_request"] for r in json.loads(raw or "[]")]
        entries = [self.signed.get(csr) or self._sign(csr) for csr in wanted]
        text = json.dumps(entries)
        mine = rel.app_data.setdefault("self-signed-certificates", {})
        if mine.get("certificates") != text:
            mine["certificates"] = text
            driver.standin_wrote(rel, "self-signed-certificates")

    def _sign(self, csr_pem: str) -> dict[str, object]:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.ca.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=2))
        )
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            builder = builder.add_extension(san, critical=False)
        except x509.ExtensionNotFound:
            pass
        cert = builder.sign(self.ca_key, hashes.SHA256())
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        ca_pem = self.ca.public_bytes(serialization.Encoding.PEM).decode()
        entry: dict[str, object] = {
            "certificate_signing_request": csr_pem,
            "certificate": pem,
            "ca": ca_pem,
            "chain": [pem, ca_pem],
        }
        self.signed[csr_pem] = entry
        return entry


class S3IntegratorProvider:
    def __init__(self, endpoint: str, ca_pem: str, swift_url: str, swift_user: str, swift_key: str) -> None:
        self.endpoint = endpoint  # where the units reach Swift's s3api (https, by host name)
        self.chain = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", ca_pem, re.DOTALL)
        self.swift = (swift_url, swift_user, swift_key)  # the test Swift from the host, to make the bucket

    def react(self, driver: Driver, rel: Relation, requirer: str) -> None:
        bucket = rel.app_data.get(requirer, {}).get("bucket")
        mine = rel.app_data.setdefault("s3-integrator", {})
        if not bucket or mine.get("bucket") == bucket:
            return
        self._make_bucket(bucket)
        mine.update(
            {
                "bucket": bucket,
                "endpoint": self.endpoint,
                "region": "us-east-1",
                "s3-uri-style": "path",
                "tls-ca-chain": json.dumps(self.chain),
            }
        )
        driver.standin_wrote(rel, "s3-integrator")

    def sync(self, driver: Driver, access_key: str, secret_key: str) -> None:
        """`juju run s3-integrator/leader sync-s3-credentials access-key=... secret-key=...`."""
        for rel in driver.model.relations_of("s3-integrator"):
            rel.app_data.setdefault("s3-integrator", {}).update({"access-key": access_key, "secret-key": secret_key})
            driver.standin_wrote(rel, "s3-integrator")
        driver.settle()

    def _make_bucket(self, bucket: str) -> None:
        import httpx

        url, user, key = self.swift
        auth = httpx.get(f"{url}/auth/v1.0", headers={"X-Auth-User": user, "X-Auth-Key": key})
        auth.raise_for_status()
        token = auth.headers["X-Auth-Token"]
        httpx.put(f"{auth.headers['X-Storage-Url']}/{bucket}", headers={"X-Auth-Token": token}).raise_for_status()
