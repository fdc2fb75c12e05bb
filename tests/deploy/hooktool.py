#!/usr/bin/python3
"""A Juju hook tool on a rehearsal machine (config-get, relation-set, status-set, ...: one file, linked under each
tool's name). Like Juju's own `jujuc`, it does no work itself: it sends its name, arguments, standard input and
hook context (JUJU_CONTEXT_ID) to the unit agent, here the rehearsal's model server on the host
(JUJU_AGENT_SOCKET_ADDRESS), and prints what that answers with its exit status. Files the arguments name
(`--file PATH`, `key#file=PATH`) are read here, on the machine, where the charm wrote them. Standard library only:
it runs with the machine's python3, outside the charm's venv."""

import json
import os
import sys
import urllib.request


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
    url = "http://" + os.environ["JUJU_AGENT_SOCKET_ADDRESS"] + "/hook-tool"
    body = json.dumps(request).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as response:
        answer = json.loads(response.read())
    sys.stdout.write(answer["stdout"])
    sys.stderr.write(answer["stderr"])
    return int(answer["code"])


if __name__ == "__main__":
    sys.exit(main())
