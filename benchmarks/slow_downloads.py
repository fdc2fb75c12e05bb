#!/usr/bin/env python3
"""Many concurrent *slow* downloads of one URL, bounded in time (stdlib only).

Opens --conns TCP connections (at most --connect-batch connecting at once), sends one GET on each, checks the
status line, then reads at about --rate bytes/s per connection until --duration seconds after the last connection
was opened; then closes everything. The socket receive buffer is kept small (--rcvbuf) so the server cannot dump
the file into the client's kernel buffers: it must hold each transfer open and be paced by the reader.

Prints one JSON object: connections opened / answered 200 / still open at the end, errors, bytes read, timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import time
from urllib.parse import urlsplit


async def one(
    idx: int, args: argparse.Namespace, st: dict, connect_sem: asyncio.Semaphore, stop: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    u = urlsplit(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = u.path + ("?" + u.query if u.query else "")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    sock.setblocking(False)
    try:
        async with connect_sem:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 30)
        st["connected"] += 1
        hdrs = "".join(f"{h}\r\n" for h in args.header)
        req = f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\n{hdrs}Connection: keep-alive\r\n\r\n".encode()
        await loop.sock_sendall(sock, req)
        buf = bytearray(max(args.rate // 4, 4096))
        view = memoryview(buf)
        # status line + headers
        head = b""
        while b"\r\n\r\n" not in head:
            n = await asyncio.wait_for(loop.sock_recv_into(sock, view[:4096]), 60)
            if n == 0:
                raise ConnectionError("closed before headers")
            head += bytes(view[:n])
        status = head.split(b"\r\n", 1)[0]
        code = int(status.split()[1])
        st["status"][code] = st["status"].get(code, 0) + 1
        if code != 200:
            return
        st["ok"] += 1
        st["bytes"] += len(head) - head.index(b"\r\n\r\n") - 4
        tick = 0.25
        quota = max(args.rate * tick, 1024)
        await asyncio.sleep(random.random() * tick)
        while not stop.is_set():
            got = 0
            while got < quota and not stop.is_set():
                n = await loop.sock_recv_into(sock, view[: int(min(len(buf), quota - got))])
                if n == 0:
                    st["eof"] += 1
                    return
                got += n
            st["bytes"] += got
            await asyncio.sleep(tick)
        st["open_at_end"] += 1
    except Exception as exc:
        key = type(exc).__name__
        st["errors"][key] = st["errors"].get(key, 0) + 1
    finally:
        sock.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--header", action="append", default=[], help="extra request header, 'Name: value'")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=32 * 1024, help="bytes/s read per connection")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds to hold all connections after the ramp")
    ap.add_argument("--rcvbuf", type=int, default=64 * 1024)
    ap.add_argument("--connect-batch", type=int, default=64)
    args = ap.parse_args()
    st: dict = {"connected": 0, "ok": 0, "eof": 0, "open_at_end": 0, "bytes": 0, "status": {}, "errors": {}}
    stop = asyncio.Event()
    sem = asyncio.Semaphore(args.connect_batch)
    t0 = time.monotonic()
    tasks = [asyncio.create_task(one(i, args, st, sem, stop)) for i in range(args.conns)]
    # ramp: wait until every connection got its status line (or failed), at most 120 s
    ramp_deadline = t0 + 120
    while time.monotonic() < ramp_deadline:
        answered = sum(st["status"].values()) + sum(st["errors"].values())
        if answered >= args.conns:
            break
        await asyncio.sleep(0.1)
    t_ramp = time.monotonic() - t0
    print(f"ramp done in {t_ramp:.1f}s: {st['ok']} x 200", file=sys.stderr, flush=True)
    await asyncio.sleep(args.duration)
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    wall = time.monotonic() - t0
    st.update(
        conns=args.conns,
        rate_per_conn=args.rate,
        hold_s=args.duration,
        ramp_s=round(t_ramp, 2),
        wall_s=round(wall, 2),
        mb_per_s=round(st["bytes"] / (wall - 0) / 1e6, 1),
    )
    print(json.dumps(st))


if __name__ == "__main__":
    asyncio.run(main())
