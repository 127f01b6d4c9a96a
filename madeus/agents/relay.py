"""The controller's side of site agents: it starts them, hands each its part of the run,
relays the ends and data values one party waits for from another, and records what agents
report (trace, journal, events) as if their jobs had run here.

Starting an agent: a session on the SSH connection to the agent's host runs
`~/.cache/madeus/madeus-agent-VERSION-HASH.pyz` with the host's `madeus_agent_python`
(`python3` by default); when the file is missing, or its agent says another hash, it is
uploaded on the same connection (umask 077) and started again. A simulated run (nothing runs on
the hosts) starts its agents on this machine instead, as `python -m madeus.agents`.

The run ends when every agent has said "done". An agent ends by itself once its own transitions
have ended; when some never can (a failure with `keep_going`), the controller tells every agent
to finish once nobody runs anything and every agent has applied what it was sent ("idle").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shlex
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from madeus import __version__
from madeus.agents import ship, wire
from madeus.agents.split import CONTROLLER, AgentSite, Split
from madeus.backends.base import Outcome
from madeus.backends.connection import inside_site
from madeus.engine.errors import Failure
from madeus.engine.executor import Executor
from madeus.engine.options import RunOptions
from madeus.engine.program import Program
from madeus.engine.runner import Inputs
from madeus.engine.values import InstanceValues
from madeus.errors import BackendError, Diagnostic
from madeus.inventory import AGENT_PYTHON_VAR, Host, Inventory
from madeus.trace import AgentRecord

# A simulated run's agents: processes of this machine (nothing runs on the hosts).
LOCAL_AGENT = [sys.executable, "-m", "madeus.agents"]
HELLO_TIMEOUT = 60.0  # seconds for an agent to start (its Python imports madeus)
_STATUSES = frozenset({"ok", "failed", "timeout", "cancelled", "skipped"})
_log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Link:
    k: int
    site: AgentSite
    process: Any  # an asyncssh SSHClientProcess or an asyncio subprocess
    stderr: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    listener: asyncio.Task[None] | None = None  # reads its standard error into `stderr`
    sent: int = 0  # "end" and "data" messages sent
    idle_at: int = -1  # `sent` as of its last "idle", -1 once it runs something again
    done: bool = False
    delta: float = 0.0  # its monotonic clock + delta = ours
    delay: float = 0.0  # one way, seconds: half the round trip of "ping"
    start_sent: float = 0.0  # when "start" was sent (its "t0" answer is a second ping)
    base: float = math.nan  # its run time + base = ours

    def send(self, *fields: Any) -> None:
        self.process.stdin.write(wire.line(*fields))

    async def readline(self) -> bytes:
        line: bytes = await self.process.stdout.readline()
        return line

    def last_words(self) -> str:
        text = " / ".join(line for line in self.stderr if line.strip())
        return f": {text}" if text else ""


class Relay:
    def __init__(
        self,
        executor: Executor,
        parts: Split,
        *,
        options: RunOptions,
        params: Mapping[str, InstanceValues],
        inventory: Inventory,
        run_id: str,
        ssh: Any = None,
        skip: frozenset[int] = frozenset(),
        outputs: Mapping[int, str] | None = None,
        data: Mapping[tuple[str, str], str] | None = None,
        keys_forwarded: bool = False,
    ) -> None:
        """`ssh`: the run's SSH backend (None for a simulated run: agents start here);
        `keys_forwarded`: the site's key files are in the agent forwarded to agents' hosts
        (`madeus.agents.keys`), so agents authenticate with it rather than with files."""
        self._executor = executor
        self._runner = executor.runner
        self._p: Program = executor.program
        self._split = parts
        self._options = options
        self._params = params
        self._inventory = inventory
        self._run_id = run_id
        self._ssh = ssh
        self._skip = skip
        self._outputs = outputs or {}
        self._data = data or {}
        self._keys_forwarded = keys_forwarded
        self._links: list[_Link] = []
        self._finishing = False
        # (agent, transition) -> when its end was sent to that agent: nothing there that waits
        # for it started earlier, whatever the clocks say.
        self._sent_at: dict[tuple[int, int], float] = {}
        # Per transition: the agents told of its end; per data value: the agents told of it.
        forward: dict[int, list[int]] = {}
        for k, needs in enumerate(parts.needs):
            for i in needs:
                forward.setdefault(i, []).append(k)
        self._forward = forward
        data_forward: dict[tuple[str, str], list[int]] = {}
        for k, keys in enumerate(parts.data_needs):
            for key in keys:
                data_forward.setdefault(key, []).append(k)
        self._data_forward = data_forward
        runner = self._runner
        runner.hand_over(i for i, k in enumerate(parts.owner) if k != CONTROLLER)
        runner.scheduler = self
        runner.after_job = self._check_quiet
        runner.on_stop = self._stop_all
        executor.on_data = self._computed

    # --- starting the agents -------------------------------------------------------------

    async def open(self) -> None:
        """Start every agent, hand it its work, and wait until each has connected to its
        site's hosts. BackendError (every problem of every site) when one cannot."""
        problems: list[str] = []

        async def one(k: int, site: AgentSite) -> None:
            try:
                self._links.append(await self._start(k, site))
            except BackendError as exc:
                problems.extend(d.message for d in exc.diagnostics)
            except (OSError, ValueError, EOFError) as exc:  # a channel that broke, nonsense
                where = f'the agent of site "{site.name}" on {site.host.name}'
                problems.append(f"{where}: {exc or type(exc).__name__}")

        async with asyncio.TaskGroup() as tg:
            for k, site in enumerate(self._split.sites):
                tg.create_task(one(k, site))
        self._links.sort(key=lambda link: link.k)
        if problems:
            raise BackendError([Diagnostic("agent", m) for m in problems])
        self._record_agents()

    def _record_agents(self) -> None:
        self._runner.agents = tuple(
            AgentRecord(
                link.site.name,
                link.site.host.name,
                link.delay,
                tuple(sorted(self._split.instances[link.k])),
            )
            for link in self._links
        )

    async def _start(self, k: int, site: AgentSite) -> _Link:
        """The agent's process, once it has said hello with our version and hash, and is
        ready: connected to its site's hosts, clock offset measured. The work goes out with
        the command (no round trip waits for the hello first); the file run is named by our
        hash, so only a damaged one says another."""
        where = f'the agent of site "{site.name}" on {site.host.name}'
        work = wire.work_line(self._work(k))
        for attempt in (1, 2):
            process: Any
            if self._ssh is None:
                process = await asyncio.create_subprocess_exec(
                    *LOCAL_AGENT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    limit=1 << 24,
                )
            else:
                process = await self._ssh.session(site.host, _run_command(site.host))
            link = _Link(k, site, process)
            link.listener = asyncio.get_running_loop().create_task(
                _collect(process.stderr, link.stderr)
            )
            with contextlib.suppress(OSError):  # it may have said "missing" and ended
                process.stdin.write(work)
            try:
                async with asyncio.timeout(HELLO_TIMEOUT):
                    first = await link.readline()
            except TimeoutError:
                first = b""
            hello = _hello(first)
            if hello == (__version__, ship.source_hash()):
                problems = await self._until_ready(link)
                if problems:
                    await self._close(link)
                    raise BackendError([Diagnostic("agent", f"{where}: {p}") for p in problems])
                return link
            await self._close(link)
            missing = first.strip() == b"madeus-agent-missing"
            if attempt == 1 and self._ssh is not None and (missing or hello is not None):
                await self._upload(site.host)  # missing, or a damaged file of our name
                continue
            said = (
                f"it runs madeus {hello[0]} (hash {hello[1][:16]}), not {__version__} "
                f"({ship.source_hash()[:16]})"
                if hello is not None
                else f"it did not start{link.last_words()}"
            )
            raise BackendError([Diagnostic("agent", f"{where}: {said}")])
        raise AssertionError("unreachable")

    async def _until_ready(self, link: _Link) -> list[str]:
        """Measure the clock offset (a ping, answered while the agent connects to its
        site's hosts) and wait for "ready": the problems it reports (hosts of its site it
        cannot reach)."""
        sent = time.monotonic()
        link.send("ping", sent)
        problems: list[str] | None = None
        pong = False
        while problems is None or not pong:
            raw = await link.readline()
            if not raw:
                return [f"it stopped{link.last_words()}"]
            message = wire.parse(raw)
            if message[0] == "pong":
                back = time.monotonic()
                link.delta = (sent + back) / 2 - float(message[2])
                link.delay = (back - sent) / 2
                pong = True
            elif message[0] == "ready":
                problems = [str(p) for p in message[1]]
        return problems

    async def _upload(self, host: Host) -> None:
        name = ship.file_name()
        command = (
            'umask 077 && mkdir -p "$HOME/.cache/madeus" && '
            f'f="$HOME/.cache/madeus/{name}" && cat > "$f.$$" && mv -f "$f.$$" "$f"'
        )
        process = await self._ssh.session(host, command)
        process.stdin.write(ship.zipapp())
        process.stdin.write_eof()
        result = await process.wait()
        if result.exit_status != 0:
            text = result.stderr.decode(errors="replace").strip() if result.stderr else ""
            raise BackendError(
                [Diagnostic("agent", f"cannot install the agent on {host.name}: {text}")]
            )
        _log.info("installed the agent on %s (%s)", host.name, name)

    def _work(self, k: int) -> wire.Work:
        p, parts = self._p, self._split
        site = parts.sites[k]
        hosts = tuple(
            self._inside(h) if h.name in site.hosts else Host(h.name, "", connection="ssh")
            for h in p.hosts
        )
        own = {h.name: h for h in hosts if h.name in site.hosts}
        inventory = Inventory(hosts=own, groups={}, sites={site.name: tuple(own)})
        known: list[str] = []
        if self._ssh is not None:
            for name in sorted(site.hosts):
                host = self._inventory.hosts[name]
                inner = own[name]
                pattern = inner.address if inner.port == 22 else f"[{inner.address}]:{inner.port}"
                known.extend(f"{pattern} {key}" for key in self._ssh.trusted_keys(host))
        slots = frozenset(parts.slots(k))
        instances = parts.instances[k]
        jobs = {j for i in slots for j in range(p.job_base[i], p.job_base[i + 1])}
        return wire.Work(
            assembly=self._executor.assembly,
            run_id=self._run_id,
            site=site.name,
            program=_with_hosts(p, hosts),
            slots=slots,
            needs=parts.needs[k],
            instances=instances,
            params={n: v for n, v in self._params.items() if n in instances},
            inventory=inventory,
            options=_agent_options(self._options, self._keys_forwarded),
            known_hosts="\n".join(known) + "\n" if known else "",
            skip=frozenset(j for j in self._skip if j in jobs),
            outputs={i: o for i, o in self._outputs.items() if i in slots},
            # A resume's data values, of its instances and of those it uses (the provider
            # computes again only what the journal does not hold).
            data={
                key: v
                for key, v in self._data.items()
                if key[0] in instances or key in parts.data_needs[k]
            },
        )

    def _inside(self, host: Host) -> Host:
        inner = inside_site(host)
        return replace(inner, key_file=None) if self._keys_forwarded else inner

    # --- the run -------------------------------------------------------------------------

    async def run(self) -> None:
        """The run's `until`: start the agents' runs, apply what they report until each has
        said "done"."""
        for link in self._links:
            link.start_sent = time.monotonic()
            link.send("start")
        try:
            async with asyncio.TaskGroup() as tg:
                for link in self._links:
                    tg.create_task(self._listen(link))
        finally:
            self._record_agents()  # with the delays measured at the start

    async def _listen(self, link: _Link) -> None:
        while not link.done:
            raw = await link.readline()
            if not raw:
                self._lost(link)
                return
            try:
                self._apply(link, wire.parse(raw))
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                self._lost(link, f"it sent something that is not madeus' ({exc})")
                return
            self._check_quiet()

    def _apply(self, link: _Link, message: list[Any]) -> None:
        kind = message[0]
        runner = self._runner
        if kind == "s":
            j = self._own_job(link, message[1])
            link.idle_at = -1
            at = max(self._time(link, message[2]), self._not_before(link, j))
            runner.told_start(j, at, _count(message[3]))
        elif kind == "e":
            j = self._own_job(link, message[1])
            link.idle_at = -1
            status = message[2]
            if status not in _STATUSES:
                raise ValueError(f"status {status!r}")
            output = _text_or_none(message[9])
            outcome = Outcome(
                ok=status == "ok",
                exit_status=None if message[6] is None else int(message[6]),
                output=output or "",
                message=str(message[7]),
                stderr_tail=str(message[8]),
            )
            start = max(self._time(link, message[3]), self._not_before(link, j))
            end = self._time(link, message[4])
            runner.told_end(j, status, outcome, start, max(start, end), _count(message[5]))
        elif kind == "data":
            key = (str(message[1]), str(message[2]))
            if key[0] not in self._split.instances[link.k]:
                raise ValueError(
                    f"a data value of {key[0]}, which site {link.site.name} does not run"
                )
            value, secret = str(message[3]), bool(message[4])
            self._executor.told_data(key, value, secret, record=True)
            self._forward_data(key, value, secret, source=link.k)
        elif kind == "idle":
            link.idle_at = int(message[1])
        elif kind == "t0":
            # "start" found the agent idle: its answer measures the offset better than the
            # ping did while the agent was connecting (the shorter round trip wins).
            back, agent_t0 = time.monotonic(), float(message[1])
            if back - link.start_sent < 2 * link.delay:
                link.delta = (link.start_sent + back) / 2 - agent_t0
                link.delay = (back - link.start_sent) / 2
            link.base = agent_t0 + link.delta - runner.t0
        elif kind == "done":
            link.done = True
            if message[1]:
                self._failed(link, str(message[1]))
        else:
            raise ValueError(f"unknown message {kind!r}")

    def _own_job(self, link: _Link, value: object) -> int:
        j = _int(value)
        p = self._p
        if not 0 <= j < p.jobs or self._split.owner[p.job_trans[j]] != link.k:
            raise ValueError(f"job {j} is not site {link.site.name}'s")
        return j

    def _not_before(self, link: _Link, j: int) -> float:
        """The earliest a job of the agent could start: when the controller sent the run's
        start, and the last end of another party's transition it waits for."""
        s = self._p.job_trans[j]
        floor = link.start_sent - self._runner.t0
        for i in self._split.waits.get(s, ()):
            floor = max(floor, self._sent_at.get((link.k, i), floor))
        return floor

    def _time(self, link: _Link, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"not a time: {value!r}")
        at = float(value)
        base = link.base if not math.isnan(link.base) else 0.0
        return max(0.0, min(at + base, self._runner.now()))

    def _lost(self, link: _Link, why: str | None = None) -> None:
        """The agent's channel closed (or spoke nonsense) before it said "done": its running
        jobs are lost (nobody knows whether they did their work), and the run stops."""
        link.done = True
        reason = why or f"its channel closed{link.last_words()}"
        message = f'the agent of site "{link.site.name}" on {link.site.host.name} stopped: {reason}'
        runner, p = self._runner, self._p
        lost = Outcome(ok=False, message=message, uncertain=True)
        now = runner.now()
        for i in self._split.slots(link.k):
            for j in range(p.job_base[i], p.job_base[i + 1]):
                if runner.running(j):
                    runner.told_end(j, "failed", lost, runner.started(j), now, 1)
        self._failed(link, reason)

    def _failed(self, link: _Link, reason: str) -> None:
        self._runner.failures.append(
            Failure(
                transition=f"agent of site {link.site.name}",
                host=link.site.host.name,
                status="failed",
                exit_status=None,
                message=reason,
                stderr_tail="",
                attempts=1,
            )
        )
        self._runner.stop()

    # --- the scheduler: what the controller's executor ends, agents may wait for --------------

    def inputs(self, slot: int) -> Inputs:
        return self._executor.inputs(slot)

    def ended(self, slot: int) -> None:
        self._executor.ended(slot)
        for k in self._forward.get(slot, ()):
            link = self._link(k)
            if link is not None and not link.done:
                link.sent += 1
                link.send("end", slot)
                self._sent_at[(k, slot)] = self._runner.now()

    def _computed(self, key: tuple[str, str], value: str, secret: bool) -> None:
        self._forward_data(key, value, secret, source=CONTROLLER)

    def _forward_data(self, key: tuple[str, str], value: str, secret: bool, source: int) -> None:
        for k in self._data_forward.get(key, ()):
            link = self._link(k)
            if k != source and link is not None and not link.done:
                link.sent += 1
                link.send("data", key[0], key[1], value, secret)

    def _link(self, k: int) -> _Link | None:
        return self._links[k] if k < len(self._links) else None

    def _check_quiet(self) -> None:
        """Nothing runs anywhere and every agent has applied all it was sent: what is left
        can never start (a failure with keep_going); tell the agents to finish."""
        if self._finishing or not self._runner.idle():
            return
        if any(not link.done and link.idle_at != link.sent for link in self._links):
            return
        self._finishing = True
        for link in self._links:
            if not link.done:
                link.send("finish")

    def _stop_all(self) -> None:
        for link in self._links:
            if not link.done:
                link.send("stop")

    # --- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        links, self._links = self._links, []
        async with asyncio.TaskGroup() as tg:
            for link in links:
                tg.create_task(self._close(link))

    async def _close(self, link: _Link) -> None:
        process = link.process
        with contextlib.suppress(Exception):
            if hasattr(process.stdin, "write_eof"):
                process.stdin.write_eof()
            else:
                process.stdin.close()
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except Exception:
            with contextlib.suppress(Exception):
                process.kill() if hasattr(process, "kill") else process.close()
        if link.listener is not None:
            link.listener.cancel()
            with contextlib.suppress(BaseException):
                await link.listener


def _run_command(host: Host) -> str:
    python = shlex.quote(str(host.vars.get(AGENT_PYTHON_VAR) or "python3"))
    name = ship.file_name()
    return (
        f'f="$HOME/.cache/madeus/{name}"; if [ -f "$f" ]; then exec {python} "$f"; fi; '
        "echo madeus-agent-missing"
    )


def _hello(raw: bytes) -> tuple[str, str] | None:
    try:
        message = wire.parse(raw)
    except ValueError:
        return None
    if message[0] != "hello" or len(message) < 3:
        return None
    return str(message[1]), str(message[2])


async def _collect(stream: Any, tail: deque[str]) -> None:
    with contextlib.suppress(Exception):
        while True:
            raw = await stream.readline()
            if not raw:
                return
            tail.append(raw.decode(errors="replace").rstrip())


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return value


def _count(value: object) -> int:
    n = _int(value)
    if n < 0:
        raise ValueError(f"count {n}")
    return n


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _with_hosts(p: Program, hosts: tuple[Host, ...]) -> Program:
    return replace(p, hosts=hosts)


def _agent_options(options: RunOptions, keys_forwarded: bool) -> RunOptions:
    """The run's options as the agent applies them: its own known_hosts file; with keys
    forwarded, `--private-key` names a file of this machine, not of the agent's."""
    habits = options.habits
    if keys_forwarded and habits is not None and habits.private_key:
        habits = replace(habits, private_key=None)
    return replace(options, known_hosts=None, agents=False, habits=habits)
