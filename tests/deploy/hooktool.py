#!/usr/bin/python3 -SE
"""A Juju hook tool on a rehearsal machine (config-get, relation-set, status-set, ...: one file, linked under each
tool's name). Like Juju's own `jujuc`, it does no work itself: it sends its name, arguments, standard input and
hook context (JUJU_CONTEXT_ID) to the unit agent, here the rehearsal's model server on the host
(JUJU_AGENT_SOCKET_ADDRESS), and prints what that answers with its exit status. Files the arguments name
(`--file PATH`, `key#file=PATH`) are read here, on the machine, where the charm wrote them. Standard library only:
it runs with the machine's python3 (no site, no environment: `-SE`), outside the charm's venv, and speaks plain
HTTP/1.0 over a socket, since a hook calls tools dozens of times and each call starts an interpreter."""

import json
import os
import socket
import sys


def files_named(args: list[str]) -> dict[str, str]:
    named = {}
    for i, arg in enumerate(args):
        path = None
        if arg == "--file" and i + 1 < len(args) and args[i + 1] != "-":
            path = args[i + 1]
        elif "#file=" in arg:
            path = arg.split("#file=", 1)[1]
        if path:
            with open(path, encoding="utf-8") as f:
                named[path] = f.read()
    return named


def main() -> int:
    tool = os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    request = {
        "tool": tool,
        "args": args,
        "stdin": stdin,
        "files": files_named(args),
        "context": os.environ.get("JUJU_CONTEXT_ID", ""),
    }
    host, _, port = os.environ["JUJU_AGENT_SOCKET_ADDRESS"].rpartition(":")
    body = json.dumps(request).encode()
    head = f"POST /hook-tool HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=120) as conn:
        conn.sendall(head.encode() + body)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    status, _, rest = b"".join(chunks).partition(b"\r\n")
    if b" 200 " not in status + b" ":
        sys.stderr.write(f"ERROR the unit agent answered {status.decode(errors='replace')}\n")
        return 1
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    sys.stdout.write(answer["stdout"])
    sys.stderr.write(answer["stderr"])
    return int(answer["code"])


if __name__ == "__main__":
    sys.exit(main())
