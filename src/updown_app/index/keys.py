"""Keys of the signed index, and the root metadata made offline with ``updown keys``.

The root key never reaches the service: ``updown keys`` writes it to a file the operator keeps offline, and signs
root versions with it. The service holds only the online keys (targets, snapshot, timestamp), in a JSON file
``{name: PEM private key}``; which key signs which role is decided by the keyids the newest root lists, so a key
rotation is a new root version plus the new keys in that file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, Role, Root

from updown_app.index.layout import ONLINE_ROLES

ROOT_NAME_SUFFIX = ".root.json"


class IndexKeyError(Exception):
    """Keys or root metadata are missing, unreadable or inconsistent."""


def generate() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


def private_pem(signer: CryptoSigner) -> str:
    return signer.private_bytes.decode()


def signer_from_pem(pem: str) -> CryptoSigner:
    key = load_pem_private_key(pem.encode(), password=None)
    return CryptoSigner(key)


def write_secret(path: Path, data: str) -> None:
    """Create ``path`` readable by its owner only; never overwrite a key file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)


def replace_secret(path: Path, data: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    write_secret(tmp, data)
    tmp.replace(path)


def load_key_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexKeyError(f"cannot read key file {path.name}: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise IndexKeyError(f"key file {path.name} must hold a JSON object {{name: PEM private key}}")
    return {str(k): v for k, v in data.items()}


def load_signers(path: Path) -> dict[str, CryptoSigner]:
    """Online signers by keyid."""
    signers: dict[str, CryptoSigner] = {}
    for name, pem in load_key_file(path).items():
        try:
            signer = signer_from_pem(pem)
        except (ValueError, TypeError):
            raise IndexKeyError(f"key {name!r} of {path.name} is not a PEM private key") from None
        signers[signer.public_key.keyid] = signer
    return signers


def signers_for(root: Root, role: str, signers: Mapping[str, Signer]) -> list[Signer]:
    """The held signers the root authorises for ``role``; IndexKeyError when they cannot meet its threshold."""
    delegated = root.get_delegated_role(role)
    chosen = [signers[k] for k in delegated.keyids if k in signers]
    if len(chosen) < delegated.threshold:
        raise IndexKeyError(f"the online keys cannot sign {role}: {len(chosen)} of {delegated.threshold} held")
    return chosen


def root_versions(root_dir: Path) -> list[tuple[int, bytes]]:
    """Every ``N.root.json`` of ``root_dir``, by version, checked as a chain each signed by its predecessor."""
    found: list[tuple[int, bytes]] = []
    for path in root_dir.glob("*" + ROOT_NAME_SUFFIX):
        head = path.name.removesuffix(ROOT_NAME_SUFFIX)
        if head.isdigit():
            found.append((int(head), path.read_bytes()))
    found.sort()
    if not found or [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise IndexKeyError("the root directory must hold 1.root.json, 2.root.json, ... without gaps")
    previous: Metadata[Root] | None = None
    for version, data in found:
        md = Metadata[Root].from_bytes(data)
        if md.signed.version != version:
            raise IndexKeyError(f"{version}.root.json holds version {md.signed.version}")
        try:
            if previous is not None:
                previous.verify_delegate(Root.type, md)
            md.verify_delegate(Root.type, md)
        except Exception as exc:
            raise IndexKeyError(f"{version}.root.json is not properly signed: {exc}") from None
        previous = md
    return found


def new_root(
    root_signer: Signer,
    online: Mapping[str, Iterable[Signer]],
    *,
    version: int = 1,
    expires_days: int = 365,
    extra_root_signers: Iterable[Signer] = (),
) -> Metadata[Root]:
    """A root of ``version`` trusting ``root_signer`` for root and ``online[role]`` for the online roles, signed by
    the root key (and ``extra_root_signers``: the previous root key when it changes)."""
    root = Root(version=version, expires=datetime.now(UTC).replace(microsecond=0) + timedelta(days=expires_days))
    root.consistent_snapshot = True
    root.add_key(root_signer.public_key, Root.type)
    for role in ONLINE_ROLES:
        root.roles[role] = Role([], 1)
        for signer in online[role]:
            root.add_key(signer.public_key, role)
    md = Metadata(root)
    md.sign(root_signer)
    for signer in extra_root_signers:
        md.sign(signer, append=True)
    return md
