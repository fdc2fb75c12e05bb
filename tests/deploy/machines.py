"""The rehearsal's machines: systemd-nspawn containers booted with systemd as PID 1, each cloned from the cached
base image (an overlay: the image is the lower layer, the machine's changes its own upper layer), each in its own
network namespace with one address on a bridge this module creates. Only the addresses it assigns are ever
targets; the machines have no default route, so the only things they reach are the host's bridge address
(apt-cacher-ng, the model server, PostgreSQL and Swift forwarded there) and each other.

A machine is stopped by signalling its systemd-nspawn process (it shuts the machine down), never by name."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


def base_image() -> Path:
    """The cached base image (built by base-image.sh when missing)."""
    out = subprocess.run([str(HERE / "base-image.sh")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def nspawn_tmpfs() -> None:
    """nspawn keeps per-machine propagation mounts in /run/systemd/nspawn; on a host without systemd as init that
    directory must be a tmpfs, else machines fail to start ("Attempted to remove disk file system")."""
    path = Path("/run/systemd/nspawn")
    path.mkdir(parents=True, exist_ok=True)
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    if not any(line.split(" ")[1:2] == [str(path)] for line in mounts if line):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(path)], check=True)


@dataclass
class Bridge:
    name: str
    network: ipaddress.IPv4Network
    _next: int = 10

    @property
    def host(self) -> str:
        return str(self.network.network_address + 1)

    def create(self) -> None:
        for route in subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout.split(
            "\n"
        ):
            dest = route.split(" ")[0]
            if dest and dest != "default" and ipaddress.ip_network(dest, strict=False).overlaps(self.network):
                raise RuntimeError(f"subnet {self.network} is already routed here ({route}): set UPDOWN_DEPLOY_SUBNET")
        subprocess.run(["ip", "link", "add", self.name, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{self.host}/{self.network.prefixlen}", "dev", self.name], check=True)
        subprocess.run(["ip", "link", "set", self.name, "up"], check=True)

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.name], check=False, capture_output=True)

    def allocate(self) -> str:
        address = self.network.network_address + self._next
        self._next += 1
        if address not in self.network or address == self.network.broadcast_address:
            raise RuntimeError(f"no free address left in {self.network}")
        return str(address)


@dataclass
class Machine:
    """One unit's machine. `root` is where the host sees its file system (the overlay's merged view)."""

    name: str
    address: str
    bridge: Bridge
    work: Path
    process: subprocess.Popen[bytes] | None = None
    leader_pid: int | None = None
    extra_hosts: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.work / "root"

    def create(self, image: Path, apt_proxy: str, ca_pem: str) -> None:
        for d in ("upper", "overlay-work", "root"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={image},upperdir={self.work / 'upper'},workdir={self.work / 'overlay-work'}",
                str(self.root),
            ],
            check=True,
        )
        r = self.root
        (r / "etc/hostname").write_text(self.name + "\n")
        hosts = ["127.0.0.1 localhost", f"{self.address} {self.name}"]
        hosts += [f"{ip} {name}" for name, ip in self.extra_hosts.items()]
        (r / "etc/hosts").write_text("\n".join(hosts) + "\n")
        (r / "etc/resolv.conf").unlink(missing_ok=True)
        (r / "etc/resolv.conf").write_text("# no DNS on the rehearsal bridge: names are in /etc/hosts\n")
        network = r / "etc/systemd/network/10-host0.network"
        network.parent.mkdir(parents=True, exist_ok=True)
        network.write_text(
            f"[Match]\nName=host0\n\n[Network]\nAddress={self.address}/{self.bridge.network.prefixlen}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )
        wants = r / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
        wants.parent.mkdir(parents=True, exist_ok=True)
        wants.unlink(missing_ok=True)
        wants.symlink_to("/lib/systemd/system/systemd-networkd.service")
        # apt as the cloud's machines have it: the host's mirrors, through the caching proxy
        for src in Path("/etc/apt/sources.list.d").glob("*.sources"):
            shutil.copy(src, r / "etc/apt/sources.list.d" / src.name)
        if any(Path("/etc/apt/sources.list.d").glob("*.sources")):
            (r / "etc/apt/sources.list").write_text("")
        (r / "etc/apt/apt.conf.d/01proxy").write_text(f'Acquire::http::Proxy "http://{apt_proxy}";\n')
        # the deployer's CA (here the rehearsal's), trusted system-wide as a cloud image would be told to; added
        # to the bundle as update-ca-certificates would (which takes seconds), and kept when it runs again
        (r / "usr/local/share/ca-certificates/rehearsal-ca.crt").write_text(ca_pem)
        with (r / "etc/ssl/certs/ca-certificates.crt").open("a") as bundle:
            bundle.write(ca_pem)

    def boot(self, timeout: float = 120) -> None:
        log = open(self.work / "nspawn.log", "wb")
        self.process = subprocess.Popen(
            [
                "systemd-nspawn",
                "-D",
                str(self.root),
                "-b",
                "--register=no",
                "--keep-unit",
                "-M",
                # unique per run: nspawn names the host side of the veth after the machine
                f"{self.name}-{os.getpid() % 100000}",
                f"--network-bridge={self.bridge.name}",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
                "--console=passive",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: systemd-nspawn exited: {(self.work / 'nspawn.log').read_text()[-2000:]}"
                )
            children = subprocess.run(
                ["pgrep", "-P", str(self.process.pid), "-x", "systemd"], capture_output=True, text=True
            ).stdout.split()
            if children:
                self.leader_pid = int(children[0])
                state = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=timeout)
                if state.stdout.strip() in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not boot in {timeout} s")

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str = "/",
        check: bool = True,
        timeout: float | None = 600,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the machine (all its namespaces), with only `env` (plus a plain PATH)."""
        assert self.leader_pid is not None, f"{self.name} is not running"
        environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        environment.update(env or {})
        cmd = ["nsenter", "-t", str(self.leader_pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w"]
        cmd += ["env", "-i", "-C", cwd, *(f"{k}={v}" for k, v in environment.items()), *argv]
        # no terminal: a background job touching the caller's tty (apt's progress) would be stopped (SIGTTOU)
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self, timeout: float = 60) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nspawn shuts the machine down cleanly on SIGTERM
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        subprocess.run(["umount", str(self.root)], check=False, capture_output=True)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)
