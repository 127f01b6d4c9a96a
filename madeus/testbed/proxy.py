"""A TCP proxy that adds a fixed one-way delay in each direction (latency emulation).

This kernel has no `tc netem`, so the testbed emulates latency in user space: every chunk read
from one side is stamped with `now + delay` and queued; a writer task per direction sends each
chunk when its time comes. Chunks stay in order and the reader keeps reading while earlier chunks
wait, so a transfer streams at full speed and only its start is late (bandwidth is not divided by
the delay). A round trip through the proxy therefore costs 2 x delay, and opening a connection
costs one delay more before the server sees it, like the SYN of a real link.

Run one per host:

    python -m madeus.testbed.proxy --listen 127.0.0.1:PORT --connect ADDR:22 --delay 0.025
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# At most this many chunks wait in each direction (16 MiB): enough for 1 gbit x 100 ms in
# flight; past it the reader stops reading, so TCP flow control slows the sender down.
QUEUE_CHUNKS = 256

_EOF = b""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @staticmethod
    def parse(text: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return Address(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


async def _read_into(
    reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]], delay: float
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await reader.read(CHUNK)
        # Stamp on arrival: the chunk is due `delay` later, whatever waits before it.
        await queue.put((loop.time() + delay, data))
        if data == _EOF:
            return


async def _write_from(
    queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due, data = await queue.get()
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if data == _EOF:
            # Half-close, so the other side still gets what is in flight towards it.
            if writer.can_write_eof():
                writer.write_eof()
            return
        writer.write(data)
        await writer.drain()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()


class DelayProxy:
    """Forwards every connection accepted on `listen` to `connect`, `delay` late each way."""

    def __init__(
        self, connect: Address, delay: float, *, connect_timeout: float | None = 30.0
    ) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.connect = connect
        self.delay = delay
        self.connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the proxy is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, listen: Address | None = None, sock: socket.socket | None = None) -> None:
        """Listen on `listen`, or on an already bound socket (no race for the port)."""
        if sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=sock)
        elif listen is not None:
            self._server = await asyncio.start_server(
                self._handle, listen.host, listen.port, reuse_address=True
            )
        else:
            raise ValueError("start() needs listen or sock")

    async def serve_forever(self) -> None:
        if self._server is None:
            raise RuntimeError("start() first")
        await self._server.serve_forever()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        upstream = asyncio.Queue[tuple[float, bytes]](QUEUE_CHUNKS)
        downstream = asyncio.Queue[tuple[float, bytes]](QUEUE_CHUNKS)
        server_writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                # The client may speak first (SSH clients do): queue it with its stamps now.
                tg.create_task(_read_into(client_reader, upstream, self.delay))
                await asyncio.sleep(self.delay)  # the SYN's trip to the server
                async with asyncio.timeout(self.connect_timeout):
                    server_reader, server_writer = await asyncio.open_connection(
                        self.connect.host, self.connect.port
                    )
                tg.create_task(_write_from(upstream, server_writer))
                tg.create_task(_read_into(server_reader, downstream, self.delay))
                tg.create_task(_write_from(downstream, client_writer))
        except* (OSError, TimeoutError) as group:
            # A reset or refused connection ends this connection only, never the proxy.
            log.info("connection to %s ended: %s", self.connect, group.exceptions[0])
        finally:
            _close(server_writer)
            _close(client_writer)


@contextlib.asynccontextmanager
async def open_delay_proxy(
    connect: Address, delay: float, listen: Address | None = None
) -> AsyncIterator[DelayProxy]:
    """A running proxy for the duration of the block (listening on a free loopback port)."""
    proxy = DelayProxy(connect, delay)
    await proxy.start(listen or Address("127.0.0.1", 0))
    try:
        yield proxy
    finally:
        await proxy.aclose()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m madeus.testbed.proxy",
        description="Forward TCP connections, delaying every chunk by DELAY in each direction.",
    )
    p.add_argument("--listen", required=True, type=Address.parse, metavar="HOST:PORT")
    p.add_argument("--connect", required=True, type=Address.parse, metavar="HOST:PORT")
    p.add_argument("--delay", required=True, type=float, metavar="SECONDS", help="one way")
    p.add_argument(
        "--fd",
        type=int,
        metavar="N",
        help="an inherited socket already bound to --listen and listening (the testbed binds "
        "the port itself so that it knows it before the proxy starts)",
    )
    p.add_argument("--name", default="", help="a label, so the process can be recognised")
    p.add_argument("--connect-timeout", type=float, default=30.0, metavar="SECONDS")
    return p


async def _serve(args: argparse.Namespace) -> None:
    proxy = DelayProxy(args.connect, args.delay, connect_timeout=args.connect_timeout)
    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    await proxy.start(args.listen, sock)
    log.info("%s: %s -> %s, delay %gs", args.name, args.listen, args.connect, args.delay)
    await proxy.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0
    except OSError as e:
        print(f"proxy: cannot listen on {args.listen}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
