"""The Juju model of a rehearsal, kept on the host, and the hook tools' side of it: what `config-get`,
`relation-get`, `secret-get`, `status-set`, ... answer and change, with their documented command-line contract and
output formats (`--format=json`, `-r endpoint:id`, `--app`, `key#file=`). A hook tool on a machine
(hooktool.py) posts its call here; the answer is its stdout, stderr and exit status.

Only the tools and options the charms (ops 3, dpcharmlibs, the tls-certificates library) use are implemented; any
other tool or flag fails loudly with exit status 2, so a charm that starts using one makes the rehearsal fail
instead of silently getting nothing."""

from __future__ import annotations

import json
import secrets
import shlex
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ToolError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Unit:
    name: str
    address: str
    subnet: str
    leader: bool = False
    status: tuple[str, str] = ("unknown", "")
    workload_version: str = ""
    ports: set[str] = field(default_factory=set)
    state: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    @property
    def app(self) -> str:
        return self.name.split("/")[0]


@dataclass
class Application:
    name: str
    config: dict[str, Any]
    status: tuple[str, str] = ("unknown", "")
    units: list[str] = field(default_factory=list)


@dataclass
class Relation:
    id: int
    # endpoint of each side, by application name (a peer relation has one side)
    endpoints: dict[str, str]
    app_data: dict[str, dict[str, str]] = field(default_factory=dict)
    unit_data: dict[str, dict[str, str]] = field(default_factory=dict)
    # the remote units each unit has seen join (relation-list answers these, as Juju's per-unit view does)
    joined: dict[str, set[str]] = field(default_factory=dict)

    @property
    def peer(self) -> bool:
        return len(self.endpoints) == 1

    def remote_app(self, app: str) -> str:
        return app if self.peer else next(a for a in self.endpoints if a != app)


@dataclass
class Secret:
    id: str
    owner: str  # application or unit name
    revisions: list[dict[str, str]]
    label: str = ""
    description: str = ""
    granted: set[str] = field(default_factory=set)  # application names
    tracked: dict[str, int] = field(default_factory=dict)  # consumer unit -> revision it sees
    consumer_labels: dict[str, str] = field(default_factory=dict)  # consumer unit -> label


@dataclass
class Context:
    """One hook or action run: what JUJU_CONTEXT_ID names."""

    unit: str
    relation_id: int | None = None
    remote_unit: str = ""
    remote_app: str = ""
    action_params: dict[str, Any] | None = None
    action_results: dict[str, str] = field(default_factory=dict)
    action_failed: str | None = None
    action_log: list[str] = field(default_factory=list)
    changed: set[tuple[int, str]] = field(default_factory=set)  # (relation id, unit or app name) written
    reboot: bool = False


class Model:
    def __init__(self, name: str) -> None:
        self.name = name
        self.uuid = secrets.token_hex(16)
        self.apps: dict[str, Application] = {}
        self.units: dict[str, Unit] = {}
        self.relations: dict[int, Relation] = {}
        self.secrets: dict[str, Secret] = {}
        self.contexts: dict[str, Context] = {}
        self.lock = threading.RLock()
        self._next_relation = 0

    # -- what the driver (Juju's controller) does --------------------------------------------------------------

    def add_relation(self, endpoints: dict[str, str]) -> Relation:
        rel = Relation(id=self._next_relation, endpoints=endpoints)
        self._next_relation += 1
        for app in endpoints:
            rel.app_data.setdefault(app, {})
        self.relations[rel.id] = rel
        return rel

    def relations_of(self, app: str) -> list[Relation]:
        return [r for r in self.relations.values() if app in r.endpoints]

    def add_secret(self, owner: str, content: dict[str, str], label: str = "") -> Secret:
        sid = f"secret:{secrets.token_hex(10)}"
        secret = Secret(id=sid, owner=owner, revisions=[dict(content)], label=label)
        self.secrets[sid] = secret
        return secret

    def new_context(self, ctx: Context) -> str:
        cid = f"{ctx.unit}-{secrets.token_hex(6)}"
        self.contexts[cid] = ctx
        return cid

    # -- the hook tools --------------------------------------------------------------------------------------

    def call(self, request: dict[str, Any]) -> tuple[str, str, int]:
        with self.lock:
            ctx = self.contexts.get(request.get("context", ""))
            tool = request["tool"]
            if ctx is None:
                return "", f"ERROR {tool}: no hook context (JUJU_CONTEXT_ID)\n", 2
            handler = getattr(self, "_" + tool.replace("-", "_"), None)
            if handler is None:
                return "", f"ERROR {tool}: not a hook tool the rehearsal implements\n", 2
            try:
                out = handler(ctx, list(request["args"]), request.get("stdin", ""), request.get("files", {}))
            except ToolError as exc:
                return "", f"ERROR {exc}\n", exc.code
            self.units[ctx.unit].log.append(f"{tool} {_redacted_args(tool, request['args'])}")
            return out or "", "", 0

    # relation-*

    def _relation(self, ctx: Context, ref: str | None) -> Relation:
        if ref is None:
            if ctx.relation_id is None:
                raise ToolError("no relation id specified")
            rid = ctx.relation_id
        else:
            rid = int(ref.split(":")[-1])
        rel = self.relations.get(rid)
        if rel is None or self.units[ctx.unit].app not in rel.endpoints:
            raise ToolError(f"relation not found: {ref}")
        return rel

    def _relation_ids(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--format"})
        app = self.units[ctx.unit].app
        endpoint = rest[0] if rest else ""
        ids = [f"{r.endpoints[app]}:{r.id}" for r in self.relations_of(app) if r.endpoints[app] == endpoint]
        return _out(opts, ids)

    def _relation_list(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, _ = _parse(args, flags={"--format", "-r"}, switches={"--app"})
        rel = self._relation(ctx, opts.get("-r"))
        app = self.units[ctx.unit].app
        if "--app" in opts:
            return _out(opts, rel.remote_app(app))
        return _out(opts, sorted(rel.joined.get(ctx.unit, set()), key=_unit_order))

    def _relation_get(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--format", "-r"}, switches={"--app"})
        rel = self._relation(ctx, opts.get("-r"))
        key = rest[0] if rest else "-"
        member = rest[1] if len(rest) > 1 else ctx.remote_unit or ctx.remote_app
        if not member:
            raise ToolError("no unit or application specified")
        me = self.units[ctx.unit]
        if "--app" in opts:
            if member not in rel.endpoints:
                raise ToolError(f"application {member} is not in relation {rel.id}")
            if member == me.app and not rel.peer and not me.leader:
                raise ToolError("permission denied: only the leader reads its application's data", 1)
            data = rel.app_data.get(member, {})
        else:
            if member != ctx.unit and member.split("/")[0] not in rel.endpoints:
                raise ToolError(f"unit {member} is not in relation {rel.id}")
            data = rel.unit_data.get(member, {})
            if member == ctx.unit:
                data = {
                    "egress-subnets": f"{me.address}/32",
                    "ingress-address": me.address,
                    "private-address": me.address,
                    **data,
                }
        if key == "-":
            return _out(opts, dict(data))
        return _out(opts, data.get(key))

    def _relation_set(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--format", "-r", "--file"}, switches={"--app"})
        rel = self._relation(ctx, opts.get("-r"))
        me = self.units[ctx.unit]
        values: dict[str, str] = {}
        if "--file" in opts:
            text = stdin if opts["--file"] == "-" else files[opts["--file"]]
            import yaml  # Juju reads the file as YAML (JSON is YAML)

            values.update({str(k): "" if v is None else str(v) for k, v in (yaml.safe_load(text) or {}).items()})
        for pair in rest:
            k, _, v = pair.partition("=")
            values[k] = v
        if "--app" in opts:
            if not me.leader:
                raise ToolError("cannot write application data: this unit is not the leader", 1)
            bag = rel.app_data.setdefault(me.app, {})
            ctx.changed.add((rel.id, me.app))
        else:
            bag = rel.unit_data.setdefault(ctx.unit, {})
            ctx.changed.add((rel.id, ctx.unit))
        for k, v in values.items():
            if v == "":
                bag.pop(k, None)
            else:
                bag[k] = v
        return ""

    def _relation_model_get(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, _ = _parse(args, flags={"--format", "-r"})
        self._relation(ctx, opts.get("-r"))
        return _out(opts, {"uuid": self.uuid})

    # config, leadership, status

    def _config_get(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--format"}, switches={"--all", "-a"})
        config = self.apps[self.units[ctx.unit].app].config
        if rest:
            return _out(opts, config.get(rest[0]))
        return _out(opts, dict(config))

    def _is_leader(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, _ = _parse(args, flags={"--format"})
        return _out(opts, self.units[ctx.unit].leader)

    def _leader_get(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--format"})
        data = self._leader_settings(self.units[ctx.unit].app)
        return _out(opts, data.get(rest[0]) if rest else dict(data))

    def _leader_set(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        _, rest = _parse(args, flags=set())
        if not self.units[ctx.unit].leader:
            raise ToolError("cannot write leadership settings: not the leader", 1)
        data = self._leader_settings(self.units[ctx.unit].app)
        for pair in rest:
            k, _, v = pair.partition("=")
            if v:
                data[k] = v
            else:
                data.pop(k, None)
        return ""

    def _leader_settings(self, app: str) -> dict[str, str]:
        return self.apps[app].__dict__.setdefault("leader_settings", {})

    def _status_set(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--application"})
        if not rest or rest[0] not in ("active", "blocked", "maintenance", "waiting"):
            raise ToolError(f"invalid status {rest[:1]}")
        status = (rest[0], rest[1] if len(rest) > 1 else "")
        me = self.units[ctx.unit]
        if opts.get("--application", "false").lower() == "true":
            if not me.leader:
                raise ToolError("cannot set application status: not the leader", 1)
            self.apps[me.app].status = status
        else:
            me.status = status
        return ""

    def _status_get(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, _ = _parse(args, flags={"--format", "--application"}, switches={"--include-data"})
        me = self.units[ctx.unit]

        def d(s: tuple[str, str]) -> dict[str, Any]:
            return {"status": s[0], "message": s[1], "status-data": {}}

        if opts.get("--application", "false").lower() == "true":
            app = self.apps[me.app]
            units = {u: d(self.units[u].status) for u in app.units}
            return _out(opts, {"application-status": d(app.status), "units": units})
        return _out(opts, d(me.status))

    def _application_version_set(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        _, rest = _parse(args, flags=set())
        self.units[ctx.unit].workload_version = rest[0] if rest else ""
        return ""

    def _juju_log(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--log-level", "-l"}, switches={"--debug"})
        level = opts.get("--log-level", opts.get("-l", "INFO"))
        self.units[ctx.unit].log.append(f"{level} {' '.join(rest)}")
        return ""

    # ports and network

    def _open_port(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        _, rest = _parse(args, flags={"--endpoints"})
        self.units[ctx.unit].ports.add(_port(rest[0]))
        return ""

    def _close_port(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        _, rest = _parse(args, flags={"--endpoints"})
        self.units[ctx.unit].ports.discard(_port(rest[0]))
        return ""

    def _opened_ports(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, _ = _parse(args, flags={"--format"}, switches={"--endpoints"})
        return _out(opts, sorted(self.units[ctx.unit].ports))

    def _network_get(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--format", "-r"}, switches={"--primary-address", "--ingress-address"})
        if not rest:
            raise ToolError("no binding name specified")
        me = self.units[ctx.unit]
        if "--primary-address" in opts or "--ingress-address" in opts:
            return _out(opts, me.address)
        return _out(
            opts,
            {
                "bind-addresses": [
                    {
                        "mac-address": "",
                        "interface-name": "host0",
                        "addresses": [{"hostname": "", "value": me.address, "cidr": me.subnet}],
                    }
                ],
                "egress-subnets": [f"{me.address}/32"],
                "ingress-addresses": [me.address],
            },
        )

    # unit state

    def _state_get(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--format"})
        state = self.units[ctx.unit].state
        return _out(opts, state.get(rest[0]) if rest else dict(state))

    def _state_set(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--file"})
        state = self.units[ctx.unit].state
        if "--file" in opts:
            text = stdin if opts["--file"] == "-" else files[opts["--file"]]
            import yaml

            state.update({str(k): str(v) for k, v in (yaml.safe_load(text) or {}).items()})
        for pair in rest:
            k, _, v = pair.partition("=")
            state[k] = v
        return ""

    def _state_delete(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        self.units[ctx.unit].state.pop(args[0], None)
        return ""

    def _juju_reboot(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        ctx.reboot = True
        return ""

    def _goal_state(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, _ = _parse(args, flags={"--format"})
        app = self.apps[self.units[ctx.unit].app]
        units = {u: {"status": "active", "since": "2024-01-01T00:00:00Z"} for u in app.units}
        return _out(opts, {"units": units, "relations": {}})

    # secrets

    def _owns(self, ctx: Context, secret: Secret) -> bool:
        me = self.units[ctx.unit]
        return secret.owner == ctx.unit or (secret.owner == me.app and me.leader)

    def _find_secret(self, ctx: Context, sid: str | None, label: str | None) -> Secret:
        me = self.units[ctx.unit]
        if sid:
            key = "secret:" + sid.rsplit("/", 1)[-1].removeprefix("secret:")
            found = self.secrets.get(key)
        else:
            found = next(
                (
                    s
                    for s in self.secrets.values()
                    if (s.label == label and s.owner in (ctx.unit, me.app)) or s.consumer_labels.get(ctx.unit) == label
                ),
                None,
            )
        if found is None:
            raise ToolError(f'secret "{sid or label}" not found')
        if not (found.owner in (ctx.unit, me.app) or me.app in found.granted):
            raise ToolError(f'secret "{sid or label}" not found (permission denied)')
        return found

    def _secret_get(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--format", "--label"}, switches={"--refresh", "--peek"})
        label = opts.get("--label")
        secret = self._find_secret(ctx, rest[0] if rest else None, None if rest else label)
        latest = len(secret.revisions)
        if secret.owner in (ctx.unit, self.units[ctx.unit].app):
            revision = latest  # an owner always sees the latest revision
            if rest and label:
                secret.label = label
        else:
            revision = secret.tracked.setdefault(ctx.unit, latest)
            if "--refresh" in opts:
                revision = secret.tracked[ctx.unit] = latest
            elif "--peek" in opts:
                revision = latest
            if rest and label:
                secret.consumer_labels[ctx.unit] = label
        return _out(opts, dict(secret.revisions[revision - 1]))

    def _secret_ids(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, _ = _parse(args, flags={"--format"})
        return _out(opts, sorted(s.id for s in self.secrets.values() if self._owns(ctx, s)))

    def _secret_info_get(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--format", "--label"})
        secret = self._find_secret(ctx, rest[0] if rest else None, opts.get("--label"))
        if not self._owns(ctx, secret):
            raise ToolError(f'secret "{secret.id}" not found (not the owner)')
        info = {
            "revision": len(secret.revisions),
            "label": secret.label,
            "description": secret.description,
            "owner": "unit" if "/" in secret.owner else "application",
            "rotation": "never",
        }
        return _out(opts, {secret.id.removeprefix("secret:"): info})

    def _secret_content(self, rest: list[str], files: dict[str, str]) -> dict[str, str]:
        content = {}
        for pair in rest:
            key, _, value = pair.partition("=")
            if key.endswith("#file"):
                content[key.removesuffix("#file")] = files[value]
            elif key.endswith("#base64"):
                import base64

                content[key.removesuffix("#base64")] = base64.b64decode(value).decode()
            else:
                content[key] = value
        return content

    def _secret_add(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--label", "--description", "--expire", "--rotate", "--owner", "--file"})
        me = self.units[ctx.unit]
        owner = ctx.unit if opts.get("--owner", "application") == "unit" else me.app
        if owner == me.app and not me.leader:
            raise ToolError("only the leader can add an application-owned secret", 1)
        secret = self.add_secret(owner, self._secret_content(rest, files), label=opts.get("--label", ""))
        secret.description = opts.get("--description", "")
        return secret.id + "\n"

    def _secret_set(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--label", "--description", "--expire", "--rotate", "--owner", "--file"})
        secret = self._find_secret(ctx, rest[0], None)
        if not self._owns(ctx, secret):
            raise ToolError(f'secret "{secret.id}" not found (not the owner)')
        content = self._secret_content(rest[1:], files)
        if content and content != secret.revisions[-1]:
            secret.revisions.append(content)
        if "--label" in opts:
            secret.label = opts["--label"]
        return ""

    def _secret_remove(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        _, rest = _parse(args, flags={"--revision"})
        secret = self._find_secret(ctx, rest[0], None)
        if self._owns(ctx, secret):
            self.secrets.pop(secret.id, None)
        return ""

    def _secret_grant(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--relation", "-r", "--unit"})
        secret = self._find_secret(ctx, rest[0], None)
        rel = self._relation(ctx, opts.get("--relation", opts.get("-r")))
        secret.granted.add(rel.remote_app(self.units[ctx.unit].app))
        return ""

    def _secret_revoke(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--relation", "-r", "--unit", "--app"})
        secret = self._find_secret(ctx, rest[0], None)
        if "--app" in opts:
            secret.granted.discard(opts["--app"])
        return ""

    # actions

    def _action(self, ctx: Context) -> Context:
        if ctx.action_params is None:
            raise ToolError("not running an action")
        return ctx

    def _action_get(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        opts, rest = _parse(args, flags={"--format"})
        params = self._action(ctx).action_params or {}
        return _out(opts, params.get(rest[0]) if rest else dict(params))

    def _action_set(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        for pair in args:
            k, _, v = pair.partition("=")
            self._action(ctx).action_results[k] = v
        return ""

    def _action_log(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        self._action(ctx).action_log.append(" ".join(a for a in args if a != "--"))
        return ""

    def _action_fail(self, ctx: Context, args: list[str], stdin: str, files: dict[str, str]) -> str:
        self._action(ctx).action_failed = " ".join(a for a in args if a != "--") or "action failed without reason"
        return ""


def _parse(
    args: list[str],
    flags: set[str],
    switches: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[dict[str, str], list[str]]:
    """Juju's flag syntax: `--flag value`, `--flag=value`, switches, `--` ends the flags."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--":
            rest.extend(it)
            break
        name, eq, value = arg.partition("=")
        if arg.startswith("-") and name in flags:
            opts[name] = value if eq else next(it, "")
        elif arg.startswith("-") and arg in switches:
            opts[arg] = ""
        elif arg.startswith("-") and arg != "-":
            raise ToolError(f"flag provided but not defined: {arg}", 2)
        else:
            rest.append(arg)
    return opts, rest


def _out(opts: dict[str, str], value: Any) -> str:
    fmt = opts.get("--format", "smart")
    if fmt == "json":
        return json.dumps(value) + "\n"
    if value is None:
        return ""
    if isinstance(value, bool):
        return ("True" if value else "False") + "\n"
    if isinstance(value, (dict, list)):
        import yaml

        return yaml.safe_dump(value)
    return f"{value}\n"


def _port(spec: str) -> str:
    return spec if "/" in spec or spec == "icmp" else f"{spec}/tcp"


def _unit_order(name: str) -> tuple[str, int]:
    app, _, n = name.partition("/")
    return app, int(n or 0)


def _redacted_args(tool: str, args: list[str]) -> str:
    """What the model's log keeps of a call: never secret content, relation data or action results."""
    if tool in ("secret-add", "secret-set", "relation-set", "action-set", "state-set", "leader-set"):
        return " ".join(a.split("=")[0] if "=" in a else a for a in args)
    return shlex.join(args)


class ModelServer:
    """The hook tools' endpoint on the host's bridge address (JUJU_AGENT_SOCKET_ADDRESS on the machines)."""

    def __init__(self, model: Model, address: str) -> None:
        handler = _handler(model)
        self.httpd = ThreadingHTTPServer((address, 0), handler)
        self.address = f"{address}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ModelServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(model: Model) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["content-length"])))
            try:
                out, err, code = model.call(request)
            except Exception as exc:  # a bug of the stand-in: say so on the tool's stderr
                out, err, code = "", f"ERROR rehearsal model: {type(exc).__name__}: {exc}\n", 3
            body = json.dumps({"stdout": out, "stderr": err, "code": code}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
