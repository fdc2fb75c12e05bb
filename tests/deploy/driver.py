"""Juju's part of a rehearsal: deploy a bundle onto machines, relate, configure, add and remove units, refresh
and run actions, by playing the hooks Juju would send, in Juju's order, each through the packed charm's own
`./dispatch` on the unit's machine with the JUJU_* environment Juju sets.

What a unit sees, as with Juju:
- a new unit: install, relation-created (each relation of its application, the peer one too), leader-elected
  (the leader) or leader-settings-changed, config-changed, start; then relation-joined and relation-changed for
  each remote unit, and relation-changed whenever a remote unit (or the remote leader, for application data)
  changes what it wrote;
- `juju config`: config-changed; `juju refresh`: the charm's files replaced, upgrade-charm, config-changed;
- `juju remove-unit`: relation-departed on both sides, relation-broken, stop and remove on the leaving unit;
- update-status when the driver says time passed (Juju's 5-minute timer);
- actions: the action's hook with JUJU_ACTION_NAME, its params through action-get.

Units run their queued hooks concurrently, one hook at a time per unit (as Juju's unit agents do); the driver
settles when no unit has a hook queued. Applications without a charm (the stand-ins: PostgreSQL's provider, the
CA) answer relation data from the host (standins.py)."""

from __future__ import annotations

import copy
import json
import secrets
import stat
import subprocess
import time
import zipfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.deploy.machines import Bridge, Machine
from tests.deploy.model import Application, Context, Model, Relation, Unit

JUJU_VERSION = "3.6.4"
HOOKTOOLS = (
    "action-fail action-get action-log action-set application-version-set close-port config-get goal-state "
    "is-leader juju-log juju-reboot leader-get leader-set network-get open-port opened-ports relation-get "
    "relation-ids relation-list relation-model-get relation-set secret-add secret-get secret-grant secret-ids "
    "secret-info-get secret-remove secret-revoke secret-set state-delete state-get state-set status-get status-set"
).split()
HOOKTOOL_SRC = Path(__file__).with_name("hooktool.py")
HOOK_TIMEOUT = 600  # s; no hook of ours needs more than a few minutes, even on a cold apt cache
# Juju retries a failed hook by itself (model config automatically-retry-hooks, on by default; backoff from 5 s):
# a unit is in error only while its hook keeps failing. A mirror that stalls for a while fails one install hook
# (the charms' apt deadline), and the retry is what brings such a unit up in a real model too.
HOOK_RETRIES = 2
HOOK_RETRY_DELAY = 5.0
SEVERITY = ["error", "blocked", "maintenance", "waiting", "active", "unknown"]


class HookFailed(AssertionError):
    """A hook kept exiting non-zero (Juju's retries included), or hung: the unit would stay in `error`."""

    def __init__(self, message: str, *, hung: bool = False) -> None:
        super().__init__(message)
        self.hung = hung


@dataclass
class Hook:
    name: str  # e.g. "install", "database-relation-changed", "actions/rollback"
    relation_id: int | None = None
    remote_unit: str = ""
    remote_app: str = ""
    departing: str = ""


@dataclass
class HookRun:
    unit: str
    hook: str
    seconds: float
    code: int


@dataclass
class Standin:
    """An application the rehearsal plays itself: `react(driver, relation, requirer_app)` writes its answer."""

    name: str
    endpoint: str
    react: Callable[[Driver, Relation, str], None]


@dataclass
class ActionResult:
    status: str
    results: dict[str, str]
    message: str = ""
    log: list[str] = field(default_factory=list)


class Driver:
    def __init__(
        self,
        model: Model,
        bridge: Bridge,
        agent_address: str,
        work: Path,
        image: Path,
        apt_proxy: str,
        ca_pem: str,
        extra_hosts: dict[str, str],
    ) -> None:
        self.model, self.bridge, self.agent_address, self.work = model, bridge, agent_address, work
        self.image, self.apt_proxy, self.ca_pem, self.extra_hosts = image, apt_proxy, ca_pem, extra_hosts
        self.machines: dict[str, Machine] = {}
        self.charms: dict[str, Path] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        self.standins: dict[str, Standin] = {}
        self.queues: dict[str, deque[Hook]] = {}
        self.history: list[HookRun] = []
        self._next_unit: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=8)
        self._secret_hooks: dict[str, Any] = {}
        self._joins: set[tuple[int, str, str]] = set()  # (relation, unit, remote unit) joins queued once

    # -- deploying --------------------------------------------------------------------------------------------

    def deploy_bundle(self, bundle: dict[str, Any], standins: dict[str, Standin]) -> None:
        self.standins = standins
        apps = bundle["applications"]
        for name, spec in apps.items():
            if name in standins:
                self.model.apps[name] = Application(name=name, config={})
                continue
            self._add_application(name, Path(spec["charm"]), spec.get("options", {}))
        for pair in bundle.get("relations", []):
            (a, ea), (b, eb) = (e.split(":") for e in pair)
            self.model.add_relation({a: ea, b: eb})
        for name in standins:
            self._standin_unit(name)
        names = [
            self._new_unit(name)
            for name, spec in apps.items()
            if name not in standins
            for _ in range(int(spec.get("num_units", 1)))
        ]
        self._provision(names)
        for name in names:
            self._queue_lifecycle(name)
        for name in names:
            self._queue_joins(name)
        self.settle()

    def _add_application(self, name: str, charm: Path, options: dict[str, Any]) -> None:
        meta = charm_metadata(charm)
        self.charms[name], self.metadata[name] = charm, meta
        config = {k: v["default"] for k, v in meta.get("config", {}).get("options", {}).items() if "default" in v}
        config.update(options)
        self.model.apps[name] = Application(name=name, config=config)
        for peer, _ in meta.get("peers", {}).items():
            self.model.add_relation({name: peer})

    def _standin_unit(self, app: str) -> None:
        unit = f"{app}/0"
        self.model.units[unit] = Unit(name=unit, address=self.bridge.host, subnet=str(self.bridge.network), leader=True)
        self.model.apps[app].units.append(unit)

    def add_unit(self, app: str, settle: bool = True) -> str:
        name = self._new_unit(app)
        self._provision([name])
        self._queue_new(name)
        if settle:
            self.settle()
        return name

    def _new_unit(self, app: str) -> str:
        n = self._next_unit.get(app, 0)
        self._next_unit[app] = n + 1
        name = f"{app}/{n}"
        leader = not self.model.apps[app].units
        unit = Unit(name=name, address=self.bridge.allocate(), subnet=str(self.bridge.network), leader=leader)
        self.model.units[name] = unit
        self.model.apps[app].units.append(name)
        return name

    def _provision(self, names: list[str]) -> None:
        """A machine per unit (created and booted concurrently), the charm unpacked, the hook tools linked."""

        def one(name: str) -> Machine:
            app, n = name.split("/")
            machine = Machine(
                name=f"{app}-{n}",
                address=self.model.units[name].address,
                bridge=self.bridge,
                work=self.work / f"{app}-{n}",
                extra_hosts=self.extra_hosts,
            )
            with self.model.lock:
                self.machines[name] = machine  # from now on close() destroys it, whatever fails next
            machine.create(self.image, self.apt_proxy, self.ca_pem)
            self._install_charm(machine, name, self.charms[app])
            self._install_hooktools(machine, name)
            machine.boot()
            return machine

        list(self._pool.map(one, names))

    def _queue_new(self, name: str) -> None:
        self._queue_lifecycle(name)
        self._queue_joins(name)

    def _queue_lifecycle(self, name: str) -> None:
        app = name.split("/")[0]
        q = self.queues.setdefault(name, deque())
        q.append(Hook("install"))
        for rel in self.model.relations_of(app):
            q.append(Hook(f"{rel.endpoints[app]}-relation-created", rel.id, remote_app=rel.remote_app(app)))
        q.append(Hook("leader-elected" if self.model.units[name].leader else "leader-settings-changed"))
        q.append(Hook("config-changed"))
        q.append(Hook("start"))

    def _queue_joins(self, name: str) -> None:
        app = name.split("/")[0]
        for rel in self.model.relations_of(app):
            remote = rel.remote_app(app)
            for other in self.model.apps[remote].units:
                if other != name:
                    self._join(rel, name, other)
                    if remote in self.standins:
                        rel.joined.setdefault(other, set()).add(name)
                    else:
                        self._join(rel, other, name)

    def _join(self, rel: Relation, unit: str, remote: str) -> None:
        """Queue relation-joined + relation-changed on `unit` for `remote` (not on stand-ins: they have no hooks)."""
        app = unit.split("/")[0]
        if app in self.standins or (rel.id, unit, remote) in self._joins:
            return
        self._joins.add((rel.id, unit, remote))
        q = self.queues.setdefault(unit, deque())
        ep = rel.endpoints[app]
        remote_app = remote.split("/")[0]
        q.append(Hook(f"{ep}-relation-joined", rel.id, remote_unit=remote, remote_app=remote_app))
        q.append(Hook(f"{ep}-relation-changed", rel.id, remote_unit=remote, remote_app=remote_app))

    def remove_unit(self, unit: str) -> None:
        app = unit.split("/")[0]
        q = self.queues.setdefault(unit, deque())
        for rel in self.model.relations_of(app):
            ep = rel.endpoints[app]
            for other in sorted(rel.joined.get(unit, set())):
                q.append(Hook(f"{ep}-relation-departed", rel.id, other, other.split("/")[0], departing=unit))
            for other, seen in rel.joined.items():
                if unit in seen and other != unit and other.split("/")[0] not in self.standins:
                    oq = self.queues.setdefault(other, deque())
                    oep = rel.endpoints[other.split("/")[0]]
                    oq.append(Hook(f"{oep}-relation-departed", rel.id, unit, app, departing=unit))
            q.append(Hook(f"{ep}-relation-broken", rel.id, remote_app=rel.remote_app(app)))
        q.append(Hook("stop"))
        q.append(Hook("remove"))
        self.settle()
        self.machines.pop(unit).destroy()
        self.model.apps[app].units.remove(unit)
        self.queues.pop(unit, None)
        for rel in self.model.relations_of(app):
            rel.unit_data.pop(unit, None)
            rel.joined.pop(unit, None)

    def config(self, app: str, options: dict[str, Any]) -> None:
        cfg = self.model.apps[app].config
        before = dict(cfg)
        cfg.update(options)
        if cfg != before:
            for u in self.model.apps[app].units:
                self.queues.setdefault(u, deque()).append(Hook("config-changed"))
        self.settle()

    def refresh(self, app: str, charm: Path) -> None:
        """`juju refresh APP --path CHARM`: each unit's charm files replaced, then upgrade-charm, config-changed."""
        old = self.charms[app]
        self.charms[app], self.metadata[app] = charm, charm_metadata(charm)
        for u in self.model.apps[app].units:
            machine = self.machines[u]
            self._install_charm(machine, u, charm, previous=old)
            q = self.queues.setdefault(u, deque())
            q.append(Hook("upgrade-charm"))
            q.append(Hook("config-changed"))
        self.settle()

    def update_status(self, apps: list[str] | None = None) -> None:
        for app, a in self.model.apps.items():
            if app in self.standins or (apps and app not in apps):
                continue
            for u in a.units:
                self.queues.setdefault(u, deque()).append(Hook("update-status"))
        self.settle()

    def secret_changed(self, secret_id: str) -> None:
        """A user changed a secret's content (`juju update-secret`): its consumers get secret-changed."""
        secret = self.model.secrets[secret_id]
        for app in secret.granted:
            for u in self.model.apps[app].units:
                if u in secret.tracked:
                    self.queues.setdefault(u, deque()).append(Hook("secret-changed"))
                    self._secret_hooks[u] = secret
        self.settle()

    def run_action(self, unit: str, name: str, params: dict[str, Any] | None = None) -> ActionResult:
        actions = self.metadata[unit.split("/")[0]].get("actions", {})
        if name not in actions:
            raise KeyError(f"{unit.split('/')[0]} has no action {name}")
        if unit.endswith("/leader"):
            app = unit.split("/")[0]
            unit = next(u for u in self.model.apps[app].units if self.model.units[u].leader)
        ctx = self._run(unit, Hook(f"actions/{name}"), action_params=dict(params or {}))
        status = "failed" if ctx.action_failed is not None or ctx.__dict__.get("code") else "completed"
        self.settle()
        return ActionResult(status, ctx.action_results, ctx.action_failed or "", ctx.action_log)

    # -- running hooks ----------------------------------------------------------------------------------------

    def settle(self, max_rounds: int = 200) -> None:
        for _ in range(max_rounds):
            ready = [u for u, q in self.queues.items() if q]
            if not ready:
                return
            hooks = [(u, self.queues[u].popleft()) for u in ready]
            futures = [self._pool.submit(self._run, u, h) for u, h in hooks]
            for f in futures:
                f.result()
        raise AssertionError(f"the model did not settle in {max_rounds} rounds: {self.queues}")

    def _run(self, unit: str, hook: Hook, action_params: dict[str, Any] | None = None) -> Context:
        """The hook on the unit, retried as Juju does while it fails (not actions: those just fail)."""
        for attempt in range(HOOK_RETRIES + 1):
            try:
                return self._run_once(unit, hook, action_params)
            except HookFailed as failed:
                if action_params is not None or failed.hung or attempt == HOOK_RETRIES:
                    raise
                with (self.work / "debug-log.txt").open("a") as f:
                    f.write(f"--- {unit} {hook.name} failed; retrying in {HOOK_RETRY_DELAY * 2**attempt:.0f} s\n")
                time.sleep(HOOK_RETRY_DELAY * 2**attempt)
        raise AssertionError("unreachable")

    def _run_once(self, unit: str, hook: Hook, action_params: dict[str, Any] | None = None) -> Context:
        m = self.model
        app = unit.split("/")[0]
        with m.lock:
            before = self._writable(unit)
        ctx = Context(
            unit=unit,
            relation_id=hook.relation_id,
            remote_unit=hook.remote_unit,
            remote_app=hook.remote_app,
            action_params=action_params,
        )
        cid = m.new_context(ctx)
        machine = self.machines[unit]
        agent = unit.replace("/", "-")
        charm_dir = f"/var/lib/juju/agents/unit-{agent}/charm"
        env = {
            "PATH": f"/var/lib/juju/tools/unit-{agent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "JUJU_CONTEXT_ID": cid,
            "JUJU_AGENT_SOCKET_ADDRESS": self.agent_address,
            "JUJU_AGENT_SOCKET_NETWORK": "tcp",
            "JUJU_CHARM_DIR": charm_dir,
            "CHARM_DIR": charm_dir,
            "JUJU_DISPATCH_PATH": hook.name if hook.name.startswith("actions/") else f"hooks/{hook.name}",
            "JUJU_HOOK_NAME": "" if hook.name.startswith("actions/") else hook.name,
            "JUJU_UNIT_NAME": unit,
            "JUJU_MODEL_NAME": m.name,
            "JUJU_MODEL_UUID": m.uuid,
            "JUJU_MACHINE_ID": str(list(self.machines).index(unit)),
            "JUJU_PRINCIPAL_UNIT": "",
            "JUJU_VERSION": JUJU_VERSION,
            "JUJU_AVAILABILITY_ZONE": "",
            "JUJU_API_ADDRESSES": self.agent_address,
        }
        if hook.relation_id is not None:
            rel = m.relations[hook.relation_id]
            env["JUJU_RELATION"] = rel.endpoints[app]
            env["JUJU_RELATION_ID"] = f"{rel.endpoints[app]}:{rel.id}"
            env["JUJU_REMOTE_APP"] = hook.remote_app
            if hook.remote_unit:
                env["JUJU_REMOTE_UNIT"] = hook.remote_unit
            if hook.departing:
                env["JUJU_DEPARTING_UNIT"] = hook.departing
        if hook.name == "secret-changed":
            s = self._secret_hooks.pop(unit)
            env.update({"JUJU_SECRET_ID": s.id, "JUJU_SECRET_REVISION": str(len(s.revisions))})
            if s.consumer_labels.get(unit):
                env["JUJU_SECRET_LABEL"] = s.consumer_labels[unit]
        if action_params is not None:
            env.update({"JUJU_ACTION_NAME": hook.name.split("/", 1)[1], "JUJU_ACTION_UUID": secrets.token_hex(8)})
        with m.lock:  # relation-list answers what this unit has seen join, and no longer a departing unit
            if hook.name.endswith("-relation-joined") and hook.relation_id is not None:
                m.relations[hook.relation_id].joined.setdefault(unit, set()).add(hook.remote_unit)
            if hook.departing and hook.relation_id is not None:
                m.relations[hook.relation_id].joined.get(unit, set()).discard(hook.departing)
        logged = len(m.units[unit].log)
        start = time.monotonic()
        try:
            out = machine.run(["./dispatch"], env=env, cwd=charm_dir, check=False, timeout=HOOK_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise HookFailed(self._hung(unit, hook, e), hung=True) from None
        elapsed = time.monotonic() - start
        self.history.append(HookRun(unit, hook.name, elapsed, out.returncode))
        log = self.work / "debug-log.txt"
        with log.open("a") as f:
            calls = "\n".join(m.units[unit].log[logged:])
            f.write(f"--- {unit} {hook.name} rc={out.returncode} {elapsed:.1f}s\n{calls}\n{out.stdout}{out.stderr}")
        ctx.__dict__["code"] = out.returncode
        if out.returncode != 0 and action_params is None:
            with m.lock:  # as Juju: a failed hook's relation writes are not committed
                self._restore(unit, before)
            raise HookFailed(
                f"hook failed: {unit} {hook.name} (exit {out.returncode}); the unit would be in error:\n"
                f"{_juju_log(m.units[unit].log[logged:])[-6000:]}\n{(out.stdout + out.stderr)[-3000:]}"
            )
        with m.lock:
            self._propagate(unit, before)
        return ctx

    def _hung(self, unit: str, hook: Hook, e: subprocess.TimeoutExpired) -> str:
        """What a hung hook was doing: its output so far, the machine's processes (the stuck command), the
        journal's end, and the apt proxy's log (the charms' apt-get goes through it)."""
        machine = self.machines[unit]

        def text(b: bytes | str | None) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")

        def inside(argv: list[str]) -> str:
            try:
                r = machine.run(argv, check=False, timeout=20)
                return r.stdout + r.stderr
            except subprocess.TimeoutExpired:
                return f"({' '.join(argv)} timed out)"

        acng = sorted((self.work / "apt-cacher-ng").glob("apt-cacher*.log")) + sorted(
            (self.work / "apt-cacher-ng").glob("*.err")
        )
        proxy = "\n".join(f"{p.name}:\n{p.read_text(errors='replace')[-3000:]}" for p in acng)
        return (
            f"hook hung: {unit} {hook.name} still running after {HOOK_TIMEOUT} s (Juju would wait; we stop)\n"
            f"--- output so far\n{(text(e.stdout) + text(e.stderr))[-4000:]}\n"
            f"--- processes\n{inside(['ps', '-eo', 'pid,ppid,etimes,stat,wchan:20,args', '--forest'])[-5000:]}\n"
            f"--- journal\n{inside(['journalctl', '-n', '60', '--no-pager'])[-5000:]}\n"
            f"--- apt proxy\n{proxy}"
        )

    def _writable(self, unit: str) -> dict[tuple[int, str], dict[str, str]]:
        app = unit.split("/")[0]
        snap = {}
        for rel in self.model.relations_of(app):
            snap[(rel.id, unit)] = dict(rel.unit_data.get(unit, {}))
            snap[(rel.id, app)] = dict(rel.app_data.get(app, {}))
        return copy.deepcopy(snap)

    def _restore(self, unit: str, before: dict[tuple[int, str], dict[str, str]]) -> None:
        for (rid, who), data in before.items():
            rel = self.model.relations[rid]
            (rel.unit_data if who == unit else rel.app_data)[who] = dict(data)

    def _propagate(self, unit: str, before: dict[tuple[int, str], dict[str, str]]) -> None:
        """What the unit changed reaches the units that see it as relation-changed (and the stand-ins)."""
        after = self._writable(unit)
        app = unit.split("/")[0]
        for (rid, who), data in after.items():
            if before.get((rid, who)) == data:
                continue
            rel = self.model.relations[rid]
            remote_app = rel.remote_app(app)
            if remote_app in self.standins:
                self.standins[remote_app].react(self, rel, app)
                continue
            for other in self.model.apps[remote_app].units:
                if other == unit:
                    continue
                if who == unit and unit not in rel.joined.get(other, set()):
                    continue  # it has not seen this unit join yet: relation-joined brings the data
                if other not in self.queues:
                    continue
                ep = rel.endpoints[remote_app]
                hook = Hook(f"{ep}-relation-changed", rid, remote_unit=unit if who == unit else "", remote_app=app)
                if not any(h == hook for h in self.queues[other]):
                    self.queues[other].append(hook)

    def standin_wrote(self, rel: Relation, standin: str) -> None:
        """A stand-in changed its application data: the requirer units get relation-changed."""
        other = rel.remote_app(standin)
        for u in self.model.apps[other].units:
            if u in self.queues:
                hook = Hook(f"{rel.endpoints[other]}-relation-changed", rel.id, f"{standin}/0", standin)
                if not any(h == hook for h in self.queues[u]):
                    self.queues[u].append(hook)

    # -- machines ---------------------------------------------------------------------------------------------

    def _install_charm(self, machine: Machine, unit: str, charm: Path, previous: Path | None = None) -> None:
        """Unpack the .charm as Juju does (file modes from the archive), keeping the unit's own state."""
        target = machine.root / f"var/lib/juju/agents/unit-{unit.replace('/', '-')}/charm"
        target.mkdir(parents=True, exist_ok=True)
        if previous is not None:
            with zipfile.ZipFile(previous) as z:
                for info in z.infolist():
                    p = target / info.filename
                    if not info.is_dir() and (p.is_file() or p.is_symlink()):
                        p.unlink()
        with zipfile.ZipFile(charm) as z:
            for info in z.infolist():
                path = target / info.filename
                mode = (info.external_attr >> 16) & 0o7777
                if info.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                if stat.S_ISLNK(info.external_attr >> 16):
                    path.unlink(missing_ok=True)
                    path.symlink_to(z.read(info).decode())
                    continue
                path.write_bytes(z.read(info))
                path.chmod(mode or 0o644)

    def _install_hooktools(self, machine: Machine, unit: str) -> None:
        tools = machine.root / f"var/lib/juju/tools/unit-{unit.replace('/', '-')}"
        tools.mkdir(parents=True, exist_ok=True)
        src = machine.root / "usr/local/lib/juju-standin/hooktool.py"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(HOOKTOOL_SRC.read_text())
        src.chmod(0o755)
        for tool in HOOKTOOLS:
            (tools / tool).unlink(missing_ok=True)
            (tools / tool).symlink_to("/usr/local/lib/juju-standin/hooktool.py")

    # -- what `juju status` shows -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        apps: dict[str, Any] = {}
        for name, a in self.model.apps.items():
            if name in self.standins:
                continue
            units = {
                u: {
                    "workload-status": dict(zip(("current", "message"), self.model.units[u].status, strict=True)),
                    "public-address": self.model.units[u].address,
                }
                for u in a.units
            }
            app_status = a.status
            if app_status[0] == "unknown" and units:  # Juju derives it from the units' when the leader set none
                app_status = min((self.model.units[u].status for u in a.units), key=lambda s: SEVERITY.index(s[0]))
            apps[name] = {"application-status": {"current": app_status[0], "message": app_status[1]}, "units": units}
        return {"model": self.model.name, "applications": apps}

    def journals(self, lines: int = 80) -> str:
        """The end of every unit's journal (its services' logs): what `juju ssh <unit> journalctl` would show when
        a check fails after the hooks succeeded."""
        out = []
        for unit, machine in self.machines.items():
            try:
                r = machine.run(
                    ["journalctl", "-n", str(lines), "--no-pager", "-o", "short-monotonic"], check=False, timeout=20
                )
                out.append(f"--- {unit}\n{r.stdout[-8000:]}")
            except (subprocess.TimeoutExpired, AssertionError) as e:
                out.append(f"--- {unit}: no journal ({e})")
        return "\n".join(out)

    def close(self) -> None:
        list(self._pool.map(Machine.destroy, list(self.machines.values())))  # shut down concurrently
        self.machines.clear()
        self._pool.shutdown(wait=False)


def _juju_log(calls: list[str]) -> str:
    """What `juju debug-log` would show of a hook: its juju-log lines (ops logs its tracebacks there)."""
    return "\n".join(c for c in calls if c.split(" ", 1)[0] in ("ERROR", "WARNING", "INFO", "DEBUG", "TRACE"))


def charm_metadata(charm: Path) -> dict[str, Any]:
    """The charm's metadata, config and actions, from the .charm (charmcraft writes metadata.yaml, config.yaml and
    actions.yaml from charmcraft.yaml; a charmcraft.yaml alone is read as well)."""
    with zipfile.ZipFile(charm) as z:
        names = set(z.namelist())
        meta: dict[str, Any] = {}
        if "charmcraft.yaml" in names:
            meta.update(yaml.safe_load(z.read("charmcraft.yaml")) or {})
        for part in ("metadata", "config", "actions"):
            if f"{part}.yaml" in names:
                data = yaml.safe_load(z.read(f"{part}.yaml")) or {}
                if part == "metadata":
                    meta.update(data)
                else:
                    meta[part if part != "config" else "config"] = data
    return meta


def juju_status_text(status: dict[str, Any]) -> str:
    lines = []
    for app, a in status["applications"].items():
        s = a["application-status"]
        lines.append(f"{app}: {s['current']} {s['message']}")
        for u, us in a["units"].items():
            lines.append(
                f"  {u} {us['workload-status']['current']} {us['public-address']} {us['workload-status']['message']}"
            )
    return "\n".join(lines)


def dumps(status: dict[str, Any]) -> str:
    return json.dumps(status, indent=2)
