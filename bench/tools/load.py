#!/usr/bin/env python3
"""Sends exactly N keep-alive GETs over C connections to 127.0.0.1:PORT and
prints how many were answered 200. A fixed request count, so an instruction
count divided by N is per request (bench/tools/callgrind.sh).

usage: load.py PORT N C [EXTRA_HEADER_LINE] [PATH]
"""
import asyncio
import sys

port, n, c = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
extra = sys.argv[4] + "\r\n" if len(sys.argv) > 4 and sys.argv[4] else ""
path = sys.argv[5] if len(sys.argv) > 5 else "/"
req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()
ok = 0


async def worker(k):
    global ok
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(k):
        w.write(req)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await asyncio.wait_for(r.readexactly(length), 30)
        if head.startswith(b"HTTP/1.1 200"):
            ok += 1
    w.close()


async def main():
    per = [n // c + (1 if i < n % c else 0) for i in range(c)]
    await asyncio.gather(*(worker(k) for k in per))


asyncio.run(main())
print(ok)
