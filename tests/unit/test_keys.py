"""``updown keys``: the files it writes, what it refuses, and root versions that chain."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from tuf.api.metadata import Metadata, Root

from tests.support.tuf_index import make_index_keys
from updown_app.index.keys import load_signers, root_versions, signer_from_pem


def keys_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "updown_app", "keys", *args], capture_output=True, text=True)


def test_init_writes_private_files_and_a_self_signed_root(tmp_path: Path) -> None:
    keys = make_index_keys(tmp_path)
    for secret in (keys.root_key, keys.online_keys):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    root = Metadata[Root].from_bytes(keys.first_root.read_bytes())
    root.verify_delegate(Root.type, root)
    assert root.signed.consistent_snapshot
    online = load_signers(keys.online_keys)
    for role in ("targets", "snapshot", "timestamp"):
        (keyid,) = root.signed.roles[role].keyids
        assert keyid in online
    # The root key is not among the online keys, and nothing secret is printed.
    assert root.signed.roles["root"].keyids[0] not in online
    out = keys_cmd("show", "--root-dir", str(keys.root_dir))
    assert out.returncode == 0 and json.loads(out.stdout)["root_version"] == 1
    assert "PRIVATE" not in out.stdout + out.stderr


def test_init_never_overwrites(tmp_path: Path) -> None:
    keys = make_index_keys(tmp_path)
    before = keys.root_key.read_bytes()
    out = keys_cmd(
        "init",
        "--root-key",
        str(keys.root_key),
        "--online-keys",
        str(tmp_path / "o2.json"),
        "--root-dir",
        str(tmp_path / "r2"),
    )
    assert out.returncode != 0 and "exists" in out.stderr
    assert keys.root_key.read_bytes() == before and not (tmp_path / "o2.json").exists()


def test_rotate_chains_and_refuses_a_foreign_root_key(tmp_path: Path) -> None:
    keys = make_index_keys(tmp_path / "a")
    old = load_signers(keys.online_keys)
    keys.rotate("--role", "timestamp")
    versions = root_versions(keys.root_dir)  # raises unless 2 is signed by 1's root key
    assert [v for v, _ in versions] == [1, 2]
    new = load_signers(keys.online_keys)
    root2 = Metadata[Root].from_bytes(versions[1][1]).signed
    assert root2.roles["timestamp"].keyids[0] in new and root2.roles["timestamp"].keyids[0] not in old
    assert root2.roles["targets"].keyids == Metadata[Root].from_bytes(versions[0][1]).signed.roles["targets"].keyids

    # A new root key: root 3 is signed by the old and the new one.
    keys.rotate("--new-root-key", str(tmp_path / "a" / "root-key-2.pem"))
    versions = root_versions(keys.root_dir)
    assert [v for v, _ in versions] == [1, 2, 3]
    root3 = Metadata[Root].from_bytes(versions[2][1]).signed
    new_root_key = signer_from_pem((tmp_path / "a" / "root-key-2.pem").read_text())
    assert root3.roles["root"].keyids == [new_root_key.public_key.keyid] != root2.roles["root"].keyids

    other = make_index_keys(tmp_path / "b")
    out = keys_cmd(
        "rotate",
        "--root-key",
        str(other.root_key),
        "--online-keys",
        str(keys.online_keys),
        "--root-dir",
        str(keys.root_dir),
    )
    assert out.returncode != 0 and "not the key the current root trusts" in out.stderr
    assert [v for v, _ in root_versions(keys.root_dir)] == [1, 2, 3]
