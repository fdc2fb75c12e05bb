"""``updown keys``: make the offline root key, the online keys and the signed root versions.

    updown keys init --root-key root-key.pem --online-keys online-keys.json --root-dir roots/
    updown keys rotate --root-key root-key.pem --online-keys online-keys.json --root-dir roots/ [--role timestamp]
    updown keys show --root-dir roots/

``init`` writes the root key (keep that file offline), one online key per role into the online keys file (the
service's ``index.keys_file``) and ``1.root.json`` into the root directory (``index.root_dir``; public: mirrors
trust it first). ``rotate`` replaces the online keys of the given roles (default all) and writes the next root
version, signed by the root key (and, with ``--new-root-key``, by the new root key it then trusts): restart the
service with both files in place and it re-signs everything with the new keys; mirrors follow the new root.
Private keys are written with mode 0600 and never printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from updown_app.index.layout import ONLINE_ROLES


def _root_summary(root_dir: Path) -> dict[str, object]:
    from tuf.api.metadata import Metadata, Root

    from updown_app.index.keys import root_versions  # tuf, cryptography: when a command runs

    versions = root_versions(root_dir)
    version, data = versions[-1]
    root = Metadata[Root].from_bytes(data).signed
    return {
        "root_version": version,
        "expires": root.expires.isoformat(),
        "roles": {name: {"keyids": role.keyids, "threshold": role.threshold} for name, role in root.roles.items()},
    }


def cmd_init(args: argparse.Namespace) -> int:
    from updown_app.index.keys import (  # tuf, cryptography: when a command runs
        generate,
        new_root,
        private_pem,
        write_secret,
    )

    root_dir: Path = args.root_dir
    for path in (args.root_key, args.online_keys):
        if path.exists():
            raise SystemExit(f"updown: {path} exists; not overwriting a key")
    if root_dir.exists() and any(root_dir.glob("*.root.json")):
        raise SystemExit(f"updown: {root_dir} already holds root metadata; use 'updown keys rotate'")
    root_signer = generate()
    online = {role: generate() for role in ONLINE_ROLES}
    md = new_root(root_signer, {r: [s] for r, s in online.items()}, expires_days=args.expires_days)
    root_dir.mkdir(parents=True, exist_ok=True)
    write_secret(args.root_key, private_pem(root_signer))
    write_secret(args.online_keys, json.dumps({r: private_pem(s) for r, s in online.items()}, indent=2))
    (root_dir / "1.root.json").write_bytes(md.to_bytes())
    print(json.dumps(_root_summary(root_dir), indent=2))
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from tuf.api.metadata import Metadata, Root

    from updown_app.index.keys import (  # tuf, cryptography: when a command runs
        IndexKeyError,
        generate,
        load_key_file,
        new_root,
        private_pem,
        replace_secret,
        root_versions,
        signer_from_pem,
        write_secret,
    )

    root_dir: Path = args.root_dir
    try:
        versions = root_versions(root_dir)
        current = Metadata[Root].from_bytes(versions[-1][1]).signed
        root_signer = signer_from_pem(args.root_key.read_text())
        keys = load_key_file(args.online_keys)
    except (OSError, ValueError, IndexKeyError) as exc:
        raise SystemExit(f"updown: {exc}") from None
    if root_signer.public_key.keyid not in current.roles[Root.type].keyids:
        raise SystemExit("updown: --root-key is not the key the current root trusts")
    roles = args.role or list(ONLINE_ROLES)
    held = {signer_from_pem(pem).public_key.keyid: (name, pem) for name, pem in keys.items()}
    online = {}
    new_keys: dict[str, str] = {}
    for role in ONLINE_ROLES:
        if role in roles:
            signer = generate()
            new_keys[role] = private_pem(signer)
            online[role] = [signer]
        else:
            ids = [k for k in current.roles[role].keyids if k in held]
            if not ids:
                raise SystemExit(f"updown: the online keys file holds no key of {role}")
            online[role] = [signer_from_pem(held[k][1]) for k in ids]
            new_keys.update({held[k][0]: held[k][1] for k in ids})
    signer, extra = root_signer, []
    if args.new_root_key is not None:
        if args.new_root_key.exists():
            raise SystemExit(f"updown: {args.new_root_key} exists; not overwriting a key")
        signer, extra = generate(), [root_signer]
    md = new_root(signer, online, version=current.version + 1, expires_days=args.expires_days, extra_root_signers=extra)
    if args.new_root_key is not None:
        write_secret(args.new_root_key, private_pem(signer))
    replace_secret(args.online_keys, json.dumps(new_keys, indent=2))
    (root_dir / f"{current.version + 1}.root.json").write_bytes(md.to_bytes())
    print(json.dumps(_root_summary(root_dir), indent=2))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from updown_app.index.keys import IndexKeyError  # tuf, cryptography: when a command runs

    try:
        print(json.dumps(_root_summary(args.root_dir), indent=2))
    except IndexKeyError as exc:
        raise SystemExit(f"updown: {exc}") from None
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="signed index: offline root key, online keys, root versions")
    ksub = keys.add_subparsers(dest="keys_command", required=True)

    sp = ksub.add_parser("init", help="create the root key, the online keys and 1.root.json")
    sp.add_argument("--root-key", type=Path, required=True, help="file for the private root key (keep offline)")
    sp.add_argument("--online-keys", type=Path, required=True, help="file for the online keys (index.keys_file)")
    sp.add_argument("--root-dir", type=Path, required=True, help="directory of root versions (index.root_dir)")
    sp.add_argument("--expires-days", type=int, default=365)
    sp.set_defaults(func=cmd_init)

    sp = ksub.add_parser("rotate", help="new online keys and the next root version, signed by the root key")
    sp.add_argument("--root-key", type=Path, required=True)
    sp.add_argument("--online-keys", type=Path, required=True)
    sp.add_argument("--root-dir", type=Path, required=True)
    sp.add_argument("--role", action="append", choices=ONLINE_ROLES, help="role whose key changes (default: all)")
    sp.add_argument("--new-root-key", type=Path, help="also replace the root key; written to this file")
    sp.add_argument("--expires-days", type=int, default=365)
    sp.set_defaults(func=cmd_rotate)

    sp = ksub.add_parser("show", help="the newest root version: expiry, keyids and thresholds")
    sp.add_argument("--root-dir", type=Path, required=True)
    sp.set_defaults(func=cmd_show)
