"""The SSH backend: shell commands and uploads on remote hosts, over asyncssh.

One connection per host, opened on the first job for that host and reused for the whole run;
each job is one SSH channel (a session running one command, or one SFTP session). Per
connection, `max_sessions` slots keep the number of channels below sshd's `MaxSessions`.

Spare channels. Opening a session channel costs a round trip, and a command can only be sent
once the server has confirmed its channel (the exec request names the server's channel number),
so a command on a new channel costs two round trips before its exit status is back. The backend
therefore keeps up to `spare_channels` session channels opened ahead on each connection, with
no command yet: a job sends its command at once on a spare and waits one round trip (the exec
reply and the command's output come back together). A spare taken is replaced in the
background. Jobs still hold one of `max_sessions` slots each; spares are counted with them so
that a connection has at most `max_sessions + 1` channels for jobs and spares (one spare stays
ready when every slot is busy), plus the one kill channel below: 10 with the defaults, OpenSSH's
default `MaxSessions`. asyncssh has no public call that opens a session channel without starting
its command: `_SpareChannel` overrides the one private step of `SSHClientChannel.create` that
waits for the open confirmation (`_open`), and the backend falls back to new channels if that
stops working with a later asyncssh.

How a command runs. Every job's exec request is the same fixed command,

    printf 'madeus-pgid:%s\\n' "$$" >&2; exec /bin/sh -c 'eval "$(cat)"'

and its script (`Job.shell_script`: exports of `Job.env`, values as shell variables, the
command with references to them, see `madeus/shell.py`) goes on the channel's standard input,
followed by end of file. So no value, secret or not, is ever part of a command line on the
host (sshd would hand it to the login shell's argv, visible in `ps`), and values of any size
fit. OpenSSH (and dropbear) start the login shell of every session with `setsid()`, so `$$` is
the process group (and session) of everything the command starts. Knowing it is what makes
cancellation real: closing an SSH channel does not stop a command that has no terminal, and
OpenSSH refuses `signal` channel requests in common configurations (Debian 12's sshd logs
"session signalling requires privilege separation"). So on cancellation we open one more
channel and run `kill -TERM -- -PGID`, wait up to `kill_grace` seconds for the command's
channel to close, then `kill -KILL -- -PGID`. These kill channels are serialised per
connection (one at a time, outside the job slots), so a burst of cancellations cannot deadlock
on the slots.

Host keys: checked against a known_hosts file, chosen in this order: the `known_hosts`
argument; a `known_hosts` file beside the inventory (what `madeus testbed up` writes); the
user's `~/.ssh/known_hosts`. A missing file trusts no key. Skipping the check
(`insecure_no_host_key_check=True`) is logged as a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncssh

from madeus.backends.base import Job, Outcome
from madeus.backends.connection import Connection, connection_of, known_hosts_file
from madeus.backends.process import OutputSink, despite_cancellation
from madeus.errors import BackendError, MadeusError
from madeus.inventory import Host, Inventory
from madeus.model import ShellAction, UploadAction
from madeus.shell import shell_argv

if TYPE_CHECKING:
    from madeus.backends.router import BackendConfig, Habits

logger = logging.getLogger(__name__)

OUTPUT_CAP = 1 << 20  # bytes of stdout kept for Outcome.output (data ports carry short values)
STDERR_TAIL_LINES = 20
_TAIL_BYTES = 64 * 1024  # enough for 20 long lines; the full stderr is in the log file
_READ_SIZE = 64 * 1024
_PGID_MARKER = b"madeus-pgid:"
_OPEN_RETRIES = 10  # about 2.5 s of backoff in all
_TRANSIENT_OPEN_CODES = frozenset({asyncssh.OPEN_CONNECT_FAILED, asyncssh.OPEN_RESOURCE_SHORTAGE})
_T = TypeVar("_T")


# The exec request of every job: the process group first, then the script from stdin.
def remote_command(become_user: str | None = None) -> str:
    """The exec request of every job: the process group first, then the script from stdin."""
    argv = shlex.join(shell_argv(become_user))
    return f"printf '{_PGID_MARKER.decode()}%s\\n' \"$$\" >&2; exec {argv}"


REMOTE_COMMAND = remote_command()


class _ConnectFailed(Exception):
    """Opening the connection failed; `reason` is in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Client(asyncssh.SSHClient):
    """Remembers why the connection ended (keepalive timeout, reset...) for the messages."""

    def __init__(self) -> None:
        self.lost: str | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = _plain(exc) if exc is not None else "closed"


class _Slots:
    """`n` job slots of one connection, handed out first come, first served (a semaphore that
    says how many are taken)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed over just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the first waiter
                return
        self.free += 1

    @property
    def busy(self) -> int:
        """Slots taken."""
        return self.n - self.free


class _SpareChannel(asyncssh.SSHClientChannel[bytes]):
    """A session channel opened before its command is known.

    `preopen()` sends the channel open request; `SSHClientChannel.create` (which runs the
    command) then finds the channel already open instead of opening it: the one step of
    `create` that waits for the server before the exec request can go out."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        options = conn._options  # asyncssh internals: what create_session passes
        super().__init__(
            conn,
            conn._loop,
            conn._utf8_decode_errors,
            None,
            "strict",
            options.window,
            options.max_pktsize,
        )
        conn._update_recv_pktlen(options.max_pktsize)
        self._opened: asyncio.Future[Any] | None = None

    async def preopen(self) -> None:
        self._opened = asyncio.ensure_future(super()._open(b"session"))
        await self._opened

    async def _open(self, chantype: bytes, *args: bytes) -> Any:
        opened, self._opened = self._opened, None
        if opened is not None and chantype == b"session" and not args:
            return await opened
        return await super()._open(chantype, *args)

    async def start(self, command: str) -> asyncssh.SSHClientProcess[bytes]:
        """Run `command` on this channel: the process, as `create_process` returns it."""
        process = await self.create(
            asyncssh.SSHClientProcess,
            command,
            None,  # subsystem
            {},  # env
            False,  # request_pty
            None,  # term_type
            None,  # term_size
            {},  # term_modes
            False,  # x11_forwarding
            None,  # x11_display
            None,  # x11_auth_path
            False,  # x11_single_connection
            False,  # agent_forwarding
        )
        assert isinstance(process, asyncssh.SSHClientProcess)
        await process.redirect(asyncssh.PIPE, asyncssh.PIPE, asyncssh.PIPE)
        return process


_Spare = asyncio.Task[_SpareChannel]


@dataclass(slots=True)
class _Connection:
    conn: asyncssh.SSHClientConnection
    client: _Client
    slots: _Slots
    kill_lane: asyncio.Lock = field(default_factory=asyncio.Lock)
    spares: deque[_Spare] = field(default_factory=deque)  # opened (or opening) ahead

    @property
    def closed(self) -> bool:
        return self.conn.is_closed() or self.client.lost is not None


class SshBackend:
    """Runs `ShellAction` and `UploadAction` jobs on hosts reached over SSH.

    `connections_opened` counts the SSH connections opened so far (one per host per run,
    unless a connection was lost and reopened); `spares_used`, the commands sent on a spare
    channel (`spare_channels` per connection; 0 opens a new channel for every command).
    """

    def __init__(
        self,
        inventory: Inventory,
        *,
        known_hosts: str | Path | None = None,
        insecure_no_host_key_check: bool = False,
        connect_timeout: float = 10,
        keepalive_interval: float = 5,
        keepalive_count_max: int = 3,
        max_sessions: int = 8,
        kill_grace: float = 3,
        spare_channels: int = 4,
        habits: Habits | None = None,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if spare_channels < 0:
            raise ValueError("spare_channels must be at least 0")
        self.inventory = inventory
        self.insecure = insecure_no_host_key_check
        self.known_hosts_path = known_hosts_file(inventory, known_hosts)
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.max_sessions = max_sessions
        self.kill_grace = kill_grace
        self.spare_channels = spare_channels
        self.habits = habits
        self.connections_opened = 0
        self.spares_used = 0  # commands sent on a spare channel (one round trip saved each)
        self._connections: dict[str, _Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._known_hosts: asyncssh.SSHKnownHosts | None = None
        self._forward: dict[str, str] = {}  # host name -> the agent socket forwarded to it
        if self.insecure:
            logger.warning(
                "SSH host key checking is disabled (insecure_no_host_key_check): "
                "connections can be intercepted"
            )

    @classmethod
    def from_config(cls, config: BackendConfig) -> SshBackend:
        keepalive: dict[str, Any] = {}
        if config.ssh_keepalive_interval is not None:
            keepalive["keepalive_interval"] = float(config.ssh_keepalive_interval)
        if config.ssh_keepalive_count_max is not None:
            keepalive["keepalive_count_max"] = int(config.ssh_keepalive_count_max)
        return cls(
            config.inventory if config.inventory is not None else Inventory.local_default(),
            known_hosts=config.known_hosts,
            insecure_no_host_key_check=config.insecure_no_host_key_check,
            habits=config.habits,
            **keepalive,
        )

    # --- the Backend protocol ------------------------------------------------------------

    async def run(self, job: Job) -> Outcome:
        try:
            target = self._connection_of(job.host)
        except BackendError as exc:  # a become method other than sudo
            return _failed(job, str(exc))
        action = job.action
        try:
            if isinstance(action, ShellAction):
                return await self._run_shell(job, target, action)
            if isinstance(action, UploadAction):
                return await self._upload(job, target, action)
        except _ConnectFailed as exc:
            return _failed(job, f"cannot connect to {target.label}: {exc.reason}")
        except MadeusError as exc:  # a placeholder that does not resolve
            return _failed(job, str(exc))
        kind = type(action).__name__ if action is not None else "no action"
        return _failed(job, f"the SSH backend cannot run {kind} (transition {job.id})")

    def host_capacity(self, host: Host) -> int:
        """Commands at once on one host's connection without waiting for a session slot (the
        engine limits each host to this)."""
        return self.max_sessions

    async def connect(self, hosts: Iterable[Host]) -> list[str]:
        """Open the connection to every host at once, before the run starts: a host that
        cannot be reached is reported before anything changes anywhere, and the first
        transitions do not pay the SSH handshake. Returns one message per such host."""
        targets = {host.name: self._connection_of(host) for host in hosts}
        problems: dict[str, str] = {}

        async def one(target: Connection) -> None:
            try:
                await self._connection(target)
            except _ConnectFailed as exc:
                problems[target.name] = f"cannot connect to {target.label}: {exc.reason}"

        async with asyncio.TaskGroup() as group:
            for target in targets.values():
                group.create_task(one(target))
        return [problems[name] for name in targets if name in problems]

    async def aclose(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for c in connections:
            for spare in c.spares:
                spare.cancel()
            c.conn.close()
        for c in connections:
            with contextlib.suppress(Exception):
                await c.conn.wait_closed()

    async def session(self, host: Host, command: str) -> asyncssh.SSHClientProcess[bytes]:
        """A session on `host`'s connection running `command` as the SSH user, its standard
        streams as bytes, for as long as the caller keeps it (a site's agent). It takes none
        of the jobs' session slots. BackendError when the host cannot be reached."""
        target = self._connection_of(host)
        try:
            connection = await self._connection(target)
            return await connection.conn.create_process(command, encoding=None)
        except _ConnectFailed as exc:
            raise BackendError(f"cannot connect to {target.label}: {exc.reason}") from None
        except (OSError, asyncssh.Error) as exc:
            raise BackendError(f"cannot start a session on {target.label}: {_plain(exc)}") from None

    def forward_agent(self, names: Iterable[str], path: str) -> None:
        """Forward the SSH agent at `path` on the connections to these hosts (site agents'
        hosts), as `ssh -A` does; set before they connect."""
        for name in names:
            self._forward[name] = path

    def trusted_keys(self, host: Host) -> list[str]:
        """The public host keys trusted for `host` as this backend reaches it (OpenSSH
        format), for a site's agent that reaches it another way."""
        known = self._trusted_keys()
        if known is None:
            return []
        target = self._connection_of(host)
        keys = asyncssh.match_known_hosts(known, target.address, target.address, target.port)[0]
        return [key.export_public_key("openssh").decode().strip() for key in keys]

    # --- connections ---------------------------------------------------------------------

    def _connection_of(self, host: Host) -> Connection:
        return connection_of(host, self.habits)

    def _trusted_keys(self) -> asyncssh.SSHKnownHosts | None:
        if self.insecure:
            return None  # asyncssh: None disables host key validation
        if self._known_hosts is None:
            path = self.known_hosts_path
            # A missing file must trust nothing (asyncssh would otherwise fall back to
            # ~/.ssh/known_hosts, which is not what the operator chose).
            text = path.read_text(encoding="utf-8") if path.is_file() else ""
            self._known_hosts = asyncssh.import_known_hosts(text)
        return self._known_hosts

    async def _connection(self, target: Connection) -> _Connection:
        current = self._connections.get(target.name)
        if current is not None and not current.closed:
            return current
        # Concurrent first jobs on one host share one connect: the others wait on the lock
        # and find the connection made.
        lock = self._locks.setdefault(target.name, asyncio.Lock())
        async with lock:
            current = self._connections.get(target.name)
            if current is not None and not current.closed:
                return current
            if current is not None:  # lost: open a fresh one
                current.conn.close()
            opened = await self._open(target)
            self._connections[target.name] = opened
            self._refill(opened)
            return opened

    async def _open(self, target: Connection) -> _Connection:
        client = _Client()
        options: dict[str, Any] = {}
        if target.user is not None:  # else asyncssh's default: the local user name
            options["username"] = target.user
        forward = self._forward.get(target.name)
        if forward is not None:
            options["agent_forwarding"] = forward
        if target.key_file is not None:
            if not Path(target.key_file).is_file():
                raise _ConnectFailed(f"private key file {target.key_file} does not exist")
            options["client_keys"] = [target.key_file]
        try:
            trusted = self._trusted_keys()
        except (OSError, ValueError) as exc:
            raise _ConnectFailed(
                f"cannot read known hosts file {self.known_hosts_path}: {exc}"
            ) from None
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: client,
                target.address,
                target.port,
                known_hosts=trusted,
                connect_timeout=self.connect_timeout,
                keepalive_interval=self.keepalive_interval,
                keepalive_count_max=self.keepalive_count_max,
                **options,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise _ConnectFailed(
                f"host key not trusted ({_plain(exc)}); checked against {self.known_hosts_path}"
            ) from None
        except asyncssh.PermissionDenied:
            who = target.user or "the current user"
            key = f" with key {target.key_file}" if target.key_file else ""
            raise _ConnectFailed(f"authentication failed for {who}{key}") from None
        except TimeoutError:
            raise _ConnectFailed(f"connection timed out after {self.connect_timeout:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise _ConnectFailed(_plain(exc)) from None
        self.connections_opened += 1
        logger.info("connected to %s as %s", target.label, target.user or "(the SSH default)")
        return _Connection(conn, client, _Slots(self.max_sessions))

    # --- shell commands ------------------------------------------------------------------

    async def _run_shell(self, job: Job, target: Connection, action: ShellAction) -> Outcome:
        script = job.shell_script(action.command).encode()
        connection = await self._connection(target)
        spare = await self._take_slot(connection)
        try:
            return await self._execute(job, target, connection, script, spare)
        finally:
            self._give_slot(connection)

    async def _execute(
        self,
        job: Job,
        target: Connection,
        connection: _Connection,
        script: bytes,
        spare: _Spare | None,
    ) -> Outcome:
        out = OutputSink(job.stdout_path, job.secrets, keep_all=True)
        err = _MarkerFilter(OutputSink(job.stderr_path, job.secrets, keep_all=False))
        try:
            return await self._execute_streams(job, target, connection, script, spare, out, err)
        finally:
            out.close()
            err.close()

    # --- channel slots and spare channels --------------------------------------------------

    async def _take_slot(self, connection: _Connection) -> _Spare | None:
        """Take a job slot (waiting for one if need be), then a spare channel if there is one:
        an opened one first, else one still opening (it is further on than a new one)."""
        await connection.slots.take()
        spare = next((s for s in connection.spares if s.done()), None)
        if spare is None and connection.spares:
            spare = connection.spares[0]
        if spare is not None:
            connection.spares.remove(spare)
        self._refill(connection)
        return spare

    def _give_slot(self, connection: _Connection) -> None:
        connection.slots.give()
        self._refill(connection)

    def _refill(self, connection: _Connection) -> None:
        """Open spare channels up to `spare_channels`, keeping the channels of the connection
        (the jobs' and the spares') at most `max_sessions + 1`: even when every job slot is
        busy, one spare is ready for the next job."""
        while (
            len(connection.spares) < self.spare_channels
            and connection.slots.busy + len(connection.spares) <= self.max_sessions
            and not connection.closed
        ):
            spare = asyncio.ensure_future(_open_spare(connection.conn))
            connection.spares.append(spare)
            spare.add_done_callback(lambda task: self._spare_done(connection, task))

    def _spare_done(self, connection: _Connection, spare: _Spare) -> None:
        if spare.cancelled():
            error: BaseException | None = asyncio.CancelledError()
        else:
            error = spare.exception()  # (retrieved: never "never retrieved")
        if error is None:
            return
        if spare in connection.spares:  # not taken by a job
            connection.spares.remove(spare)
        if not isinstance(error, OSError | asyncssh.Error | asyncio.CancelledError):
            self._disable_spares(error)

    def _disable_spares(self, error: BaseException) -> None:
        """asyncssh's internals changed (a later release): use new channels only."""
        logger.debug("spare channels disabled: %s", _plain(error))
        self.spare_channels = 0

    async def _start_process(
        self, connection: _Connection, spare: _Spare | None, command: str
    ) -> asyncssh.SSHClientProcess[bytes]:
        if spare is not None:
            try:
                channel = await spare
            except (OSError, asyncssh.Error, TypeError, AttributeError):
                # Not opened (sshd busy for a moment, or an asyncssh whose internals changed:
                # _spare_done disabled spares): open a channel the usual way.
                pass
            else:
                try:
                    process = await channel.start(command)
                except asyncssh.ChannelOpenError:
                    # The server refused the command on this channel (or closed it): nothing
                    # ran. A new channel either works or says why.
                    if connection.closed:
                        raise
                except (TypeError, AttributeError) as exc:
                    self._disable_spares(exc)  # sent nothing: create() failed before
                else:
                    self.spares_used += 1
                    return process
                channel.close()
        conn = connection.conn
        return await _retry_open(lambda: conn.create_process(command, encoding=None), conn)

    async def _execute_streams(
        self,
        job: Job,
        target: Connection,
        connection: _Connection,
        script: bytes,
        spare: _Spare | None,
        out: OutputSink,
        err: _MarkerFilter,
    ) -> Outcome:
        # The exec request may reach sshd even if we are cancelled while waiting for its
        # reply: start it as a task so that, on cancellation, we can still get the process
        # and kill it.
        starting = asyncio.ensure_future(
            self._start_process(connection, spare, remote_command(target.become_user))
        )
        try:
            process = await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                late = await asyncio.wait_for(starting, self.connect_timeout)
                reader = asyncio.ensure_future(_pump(late.stderr, err))
                try:
                    await despite_cancellation(
                        self._stop_remote(job, target, connection, late, err)
                    )
                finally:
                    reader.cancel()
            raise
        except (OSError, asyncssh.Error) as exc:
            return self._channel_failure(job, target, connection, exc)
        # The script, then end of file: `cat` takes it all, and a command reading its standard
        # input sees end of file, not a hang.
        process.stdin.write(script)
        process.stdin.write_eof()
        pumps = [
            asyncio.ensure_future(_pump(process.stdout, out)),
            asyncio.ensure_future(_pump(process.stderr, err)),
        ]
        try:
            # `wait`, not `gather`: cancelling a gather cancels what it gathers, and the pumps
            # must outlive a cancellation (the pgid marker may still be on its way, and the
            # dying command's last words belong in the logs).
            await asyncio.wait(pumps)
            for pump in pumps:
                pump.result()  # a pump's own error (the channel failed)
            await process.wait_closed()
        except asyncio.CancelledError:
            await despite_cancellation(self._stop_remote(job, target, connection, process, err))
            raise
        except (OSError, asyncssh.Error) as exc:
            return self._channel_failure(job, target, connection, exc)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            process.close()
        err.close()  # flush a last partial line before taking the tail
        stderr_tail = err.sink.tail(STDERR_TAIL_LINES)  # redacted by the sink
        if process.exit_status is None and process.exit_signal is None:
            reason = connection.client.lost or "the channel closed without an exit status"
            return Outcome(
                ok=False,
                stderr_tail=stderr_tail,
                message=job.redact(f"lost the connection to {target.label}: {reason}"),
                uncertain=True,  # the command may have run to its end unseen
            )
        if process.exit_signal is not None:
            signame = process.exit_signal[0]
            return Outcome(
                ok=False,
                exit_status=process.returncode,
                stderr_tail=stderr_tail,
                message=f"command on {target.label} was killed by signal {signame}",
            )
        status = process.exit_status
        if status != 0:
            return Outcome(
                ok=False,
                exit_status=status,
                output=out.text().strip(),
                stderr_tail=stderr_tail,
                message=f"command failed on {target.label} with exit status {status}",
            )
        return Outcome(ok=True, exit_status=0, output=out.text().strip())

    def _channel_failure(
        self, job: Job, target: Connection, connection: _Connection, exc: BaseException
    ) -> Outcome:
        if connection.closed:
            # The command may have reached the host before the connection went: unknown.
            reason = connection.client.lost or _plain(exc)
            message = job.redact(f"lost the connection to {target.label}: {reason}")
            return Outcome(ok=False, message=message, uncertain=True)
        return _failed(job, f"cannot run the command on {target.label}: {_plain(exc)}")

    async def _stop_remote(
        self,
        job: Job,
        target: Connection,
        connection: _Connection,
        process: asyncssh.SSHClientProcess[bytes],
        err: _MarkerFilter,
    ) -> None:
        """Kill the remote process group, bounded in time; never raises (we are cancelling,
        and the CancelledError must be the exception that propagates)."""
        try:
            # The marker is the wrapper's first output: it is normally known already.
            await asyncio.wait([err.pgid], timeout=self.connect_timeout)
            if not err.pgid.done() or err.pgid.cancelled() or connection.closed:
                logger.warning(
                    "%s: cancelled, but the remote command on %s could not be stopped",
                    job.id,
                    target.label,
                )
                return
            pgid = err.pgid.result()
            closed = asyncio.ensure_future(process.wait_closed())
            try:
                await self._kill(connection, pgid, "TERM")
                await asyncio.wait([closed], timeout=self.kill_grace)
                if not closed.done():
                    await self._kill(connection, pgid, "KILL")
                    await asyncio.wait([closed], timeout=self.kill_grace)
            finally:
                closed.cancel()
            logger.debug("%s: stopped process group %d on %s", job.id, pgid, target.label)
        except Exception as exc:
            logger.warning("%s: stopping the remote command failed: %s", job.id, _plain(exc))
        finally:
            process.close()

    async def _kill(self, connection: _Connection, pgid: int, signal: str) -> None:
        async with connection.kill_lane:
            await asyncio.wait_for(
                _retry_open(
                    lambda: connection.conn.run(
                        f"kill -{signal} -- -{pgid} 2>/dev/null; true", check=False
                    ),
                    connection.conn,
                ),
                self.connect_timeout,
            )

    # --- uploads -------------------------------------------------------------------------

    async def _upload(self, job: Job, target: Connection, action: UploadAction) -> Outcome:
        source = Path(job.render(action.source)).expanduser()
        local = source if source.is_absolute() else job.workdir / source
        dest = job.render(action.dest)
        if not local.exists():
            return _failed(job, f"cannot upload {local}: no such file or directory")
        connection = await self._connection(target)
        where = f"{target.label}:{dest}"
        await connection.slots.take()  # SFTP opens a channel of its own: no spare
        try:
            try:
                conn = connection.conn
                sftp_client = await _retry_open(conn.start_sftp_client, conn)
                async with sftp_client as sftp:
                    await sftp.put(str(local), dest, preserve=True, recurse=local.is_dir())
            except (OSError, asyncssh.Error) as exc:
                if connection.closed:
                    return _failed(job, f"lost the connection to {target.label}: {_plain(exc)}")
                return _failed(job, f"upload of {local} to {where} failed: {_plain(exc)}")
        finally:
            self._give_slot(connection)
        log = OutputSink(job.stdout_path, job.secrets, keep_all=False)
        log.write(f"uploaded {local} to {where}\n".encode())
        log.close()
        return Outcome(ok=True, exit_status=0)


# --- helpers -----------------------------------------------------------------------------


async def _retry_open(
    start: Callable[[], Awaitable[_T]], conn: asyncssh.SSHClientConnection | None = None
) -> _T:
    """Open a channel, retrying briefly when sshd says "open failed".

    sshd frees a finished session only at the next turn of its main loop, after the packet
    batch holding our channel close; a channel open arriving in the same batch still sees the
    old session and fails when `MaxSessions` is reached. The condition clears within
    milliseconds (as it does when another client shares the limit for a moment). A closed
    connection (`conn`) is not retried: that is no passing condition."""
    delay = 0.005
    for _ in range(_OPEN_RETRIES):
        try:
            return await start()
        except asyncssh.ChannelOpenError as exc:
            if exc.code not in _TRANSIENT_OPEN_CODES or (conn is not None and conn.is_closed()):
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
    return await start()


async def _open_spare(conn: asyncssh.SSHClientConnection) -> _SpareChannel:
    async def attempt() -> _SpareChannel:
        channel = _SpareChannel(conn)
        await channel.preopen()
        return channel

    return await _retry_open(attempt, conn)


def _failed(job: Job, message: str) -> Outcome:
    return Outcome(ok=False, message=job.redact(message))


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _plain(exc: BaseException | None) -> str:
    """An exception as plain words (no class names, no tracebacks)."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, asyncssh.SFTPError):
        return exc.reason or "SFTP error"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


class _MarkerFilter:
    """Stderr of a wrapped command: takes the wrapper's first line (`madeus-pgid:N`) out of the
    stream and resolves `pgid` with it; everything else goes on to the sink. Lines before the
    marker (a login shell's start-up noise) pass through."""

    def __init__(self, sink: OutputSink) -> None:
        self.sink = sink
        self.pgid: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._head = bytearray()

    def write(self, data: bytes) -> None:
        if self.pgid.done():
            self.sink.write(data)
            return
        self._head += data
        while (end := self._head.find(b"\n")) >= 0:
            line = bytes(self._head[: end + 1])
            del self._head[: end + 1]
            if line.startswith(_PGID_MARKER):
                try:
                    self.pgid.set_result(int(line[len(_PGID_MARKER) :]))
                except ValueError:
                    self.pgid.cancel()
                self._release()
                return
            self.sink.write(line)
        if len(self._head) > _READ_SIZE:  # no marker line is that long: it is not coming
            self.pgid.cancel()
            self._release()

    def _release(self) -> None:
        rest = bytes(self._head)
        self._head.clear()
        if rest:
            self.sink.write(rest)

    def close(self) -> None:
        if not self.pgid.done():
            self.pgid.cancel()  # "no process group known": waiters stop waiting
        self._release()
        self.sink.close()


async def _pump(reader: asyncssh.SSHReader[bytes], sink: OutputSink | _MarkerFilter) -> None:
    while chunk := await reader.read(_READ_SIZE):
        sink.write(chunk)
