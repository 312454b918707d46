"""A Redis that misbehaves, for tests: a real TCP server on loopback speaking RESP2, whose reply
to each command can be scripted — ``+OK`` where a map or an integer is due, an absurd integer,
silence (a command that never answers), bytes that are not RESP at all.

Only what fscale's coordination backend sends is understood (PING, HELLO, CLIENT, SELECT,
SCRIPT, EVALSHA/EVAL, GET/SET/MGET/SCAN, HGETALL/HINCRBY, TIME); the rest gets ``-ERR``. The
default replies are those of a sane server on which the send limiter reserves "send now".
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Callable

Reply = bytes | Callable[[list[bytes]], bytes] | None  # None: never answer


def bulk(value: bytes | str | None) -> bytes:
    if value is None:
        return b"$-1\r\n"
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(*items: bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def _reserve_now(args: list[bytes]) -> bytes:
    """The limiter script's reply on an idle server: no delay, epoch "fake", Redis's time."""
    return array(integer(0), bulk("fake"), integer(int(time.time() * 1e6)))


DEFAULTS: dict[str, Reply] = {
    "PING": b"+PONG\r\n",
    "HELLO": b"-ERR unknown command 'HELLO'\r\n",
    "CLIENT": b"+OK\r\n",
    "AUTH": b"+OK\r\n",
    "SELECT": b"+OK\r\n",
    "SCRIPT": lambda args: bulk(hashlib.sha1(args[2] if len(args) > 2 else b"").hexdigest()),
    "EVALSHA": _reserve_now,
    "EVAL": _reserve_now,
    "GET": bulk(None),
    "SET": b"+OK\r\n",
    "MGET": lambda args: array(*[bulk(None)] * (len(args) - 1)),
    "SCAN": array(bulk("0"), array()),
    "HGETALL": array(),
    "HINCRBY": integer(1),
    "TIME": lambda args: array(bulk(str(int(time.time()))), bulk("0")),
}


class FakeRedis:
    """``with FakeRedis(EVALSHA=b"+OK\\r\\n") as fake: fake.url``; ``fake.commands`` lists the
    command names received, in order."""

    def __init__(self, host: str = "127.0.0.1", **replies: Reply) -> None:
        self.host = host
        self.replies: dict[str, Reply] = {**DEFAULTS, **{k.upper(): v for k, v in replies.items()}}
        self.commands: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-redis", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/0"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, self.host, 0, family=family))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                args = await self._read_command(reader)
                if args is None:
                    break
                name = args[0].decode(errors="replace").upper() if args else ""
                self.commands.append(name)
                reply = self.replies.get(name, b"-ERR unknown command\r\n")
                if reply is None:  # never answer: the client must time out by itself
                    await asyncio.sleep(3600)
                    break
                writer.write(reply(args) if callable(reply) else reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError,
                asyncio.CancelledError):  # a client gone, or the server shutting down
            pass
        finally:
            writer.close()

    @staticmethod
    async def _read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
        line = await reader.readline()
        if not line:
            return None
        if not line.startswith(b"*"):
            return line.split()  # an inline command
        args = []
        for _ in range(int(line[1:])):
            size = int((await reader.readline())[1:])
            args.append((await reader.readexactly(size + 2))[:-2])
        return args

    def __enter__(self) -> "FakeRedis":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake Redis did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        self._thread.join(10)
        self._loop.close()
