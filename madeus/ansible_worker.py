"""A long-lived Ansible worker: `python -m madeus.ansible_worker ARGS...`.

The Ansible backend starts one per run (and roles path). It imports Ansible and loads the
inventory once (`ARGS` are `ansible-playbook` options: `-i` sources, the operator's vault
options, `--check`...), then serves plays on request: each request forks a child that runs
`ansible-playbook` (Ansible's own command line class and playbook executor) on the inventory
already loaded, so a play costs a `fork`, not a Python start and an import of Ansible.

Like one `ansible-playbook` running the plays one after another, the worker keeps what a play
leaves for the next ones: facts (gathered or `set_fact`), host variables (`include_vars`) and
the groups and hosts added at run time (`group_by`, `add_host`). Each child reports them when
its play ends; later children start with them. They live in this process's memory only.

Standard input carries JSON lines: first `{"args": [...], "vault_password": ...}` (the
operator's private options, as for `madeus.ansible_cli`), then requests:

    {"run": ID, "playbook": PATH, "hosts": [NAMES], "extra_vars": YAML, "token": TOKEN,
     "forks": N}
    {"cancel": ID, "grace": SECONDS}      SIGTERM to the child's process group, SIGKILL later

Standard output carries JSON lines: `{"ready": VERSION}` or `{"errors": [...]}` once, then
per request the child's events (the `madeus_events` callback's lines, with `"r": ID`, and
`{"e": "batch", "hosts": [NAMES], "t": MONOTONIC}` when a play, or a `serial` batch of it,
starts on those hosts),
`{"r": ID, "e": "output", "text": ...}` for what Ansible printed, and last `{"r": ID, "e":
"exit", "code": N}`. The worker ends when its standard input closes, killing the children
left.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from madeus.ansible_cli import errors_of, read_private
from madeus.backends.process import marked_processes, signal_processes

_CHUNK = 1 << 16


@dataclass
class _Child:
    run: str
    token: str  # MADEUS_JOB: marks the play's processes, in sessions of their own included
    pid: int
    events: int  # read ends
    output: int
    kill_at: float | None = None  # when SIGKILL follows the SIGTERM
    buffers: dict[int, bytes] = field(default_factory=dict)
    open: set[int] = field(default_factory=set)


@dataclass
class _Kept:
    """What plays leave for the next ones (see the module docstring), by host name."""

    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    nonpersistent: dict[str, dict[str, Any]] = field(default_factory=dict)
    variables: list[tuple[str, str, Any]] = field(default_factory=list)

    def absorb(self, state: dict[str, Any]) -> None:
        for kind, host, value in state.get("vm") or ():
            if kind == "facts":
                self.facts.setdefault(host, {}).update(value)
            elif kind == "nonpersistent":
                self.nonpersistent.setdefault(host, {}).update(value)
            elif kind == "clear":
                self.facts.pop(host, None)
            elif kind == "variable":
                self.variables.append((host, value[0], value[1]))


class Worker:
    def __init__(self, args: list[str], private: dict[str, Any]) -> None:
        self.args = [*args, *(str(a) for a in private.get("args") or ())]
        self.loader, self.inventory = _load(self.args)
        _warm_up()
        self.kept = _Kept()
        self.children: dict[int, _Child] = {}  # by pid
        self.by_run: dict[str, _Child] = {}
        self.selector = selectors.DefaultSelector()
        self._in = b""
        self._closing: float | None = None

    # --- the loop --------------------------------------------------------------------------

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(0, selectors.EVENT_READ, "stdin")
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        while True:
            timeout = self._next_deadline()
            for key, _ in self.selector.select(timeout):
                if key.data == "stdin":
                    self._read_requests()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                else:
                    self._read_child(*key.data)
            self._reap()
            self._kill_late()
            if self._closing is not None and not self.children:
                return

    def _next_deadline(self) -> float | None:
        deadlines = [c.kill_at for c in self.children.values() if c.kill_at is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _read_requests(self) -> None:
        data = os.read(0, _CHUNK)
        if not data:  # the controller is gone: nothing may be left running
            self.selector.unregister(0)
            self._closing = time.monotonic()
            for child in self.children.values():
                self._terminate(child, 3.0)
            return
        *lines, self._in = (self._in + data).split(b"\n")
        for line in lines:
            if line.strip():
                self._request(json.loads(line))

    def _request(self, request: dict[str, Any]) -> None:
        if "cancel" in request:
            child = self.by_run.get(str(request["cancel"]))
            if child is not None:
                self._terminate(child, float(request.get("grace") or 3.0))
            return
        run = str(request["run"])
        events_r, events_w = os.pipe()
        output_r, output_w = os.pipe()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 250
            try:
                os.close(events_r)
                os.close(output_r)
                code = self._play(request, events_w, output_w)
            except BaseException:
                traceback.print_exc()  # on the play's output: the job's .err log
            finally:
                os._exit(code)
        os.close(events_w)
        os.close(output_w)
        child = _Child(run, str(request["token"]), pid, events_r, output_r)
        for fd in (events_r, output_r):
            os.set_blocking(fd, False)
            child.buffers[fd] = b""
            child.open.add(fd)
            self.selector.register(fd, selectors.EVENT_READ, (child, fd))
        self.children[pid] = child
        self.by_run[run] = child

    def _read_child(self, child: _Child, fd: int, *, final: bool = False) -> None:
        """Forward what the child wrote on `fd`; `final` (the child has ended): all of it, then
        close it (its leftover processes, Ansible's workers, may hold it open: not waited
        for)."""
        while fd in child.open:
            try:
                data = os.read(fd, _CHUNK)
            except BlockingIOError:
                if final:
                    self._close_fd(child, fd)
                return
            if not data:
                self._close_fd(child, fd)
            elif fd == child.output:
                self._send({"r": child.run, "e": "output", "text": data.decode(errors="replace")})
            else:
                *lines, child.buffers[fd] = (child.buffers[fd] + data).split(b"\n")
                for line in lines:
                    self._event(child, line)
            if not final:
                return

    def _event(self, child: _Child, line: bytes) -> None:
        if not line.strip():
            return
        if line.startswith(b'{"e": "state"'):  # the worker's own, not the controller's
            self.kept.absorb(json.loads(line))
            self._absorb_inventory(json.loads(line).get("inventory") or {})
            return
        out = sys.stdout.buffer
        out.write(b'{"r": ' + json.dumps(child.run).encode() + b", " + line.lstrip()[1:] + b"\n")
        out.flush()

    def _close_fd(self, child: _Child, fd: int) -> None:
        if fd in child.open:
            child.open.discard(fd)
            self.selector.unregister(fd)
            rest, child.buffers[fd] = child.buffers[fd], b""
            if rest.strip() and fd == child.events:
                self._event(child, rest)
            os.close(fd)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            for fd in list(child.open):  # what it wrote before it ended
                self._read_child(child, fd, final=True)
            self.by_run.pop(child.run, None)
            self._send({"r": child.run, "e": "exit", "code": os.waitstatus_to_exitcode(status)})

    def _terminate(self, child: _Child, grace: float) -> None:
        """SIGTERM to the play's process group and to its marked processes (Ansible's own
        workers run in sessions of their own); SIGKILL after `grace` seconds."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGTERM)
        signal_processes(marked_processes(child.token), signal.SIGTERM)
        child.kill_at = time.monotonic() + grace

    def _kill_late(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.kill_at is not None and child.kill_at <= now:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                signal_processes(marked_processes(child.token), signal.SIGKILL)
                child.kill_at = None

    @staticmethod
    def _send(message: dict[str, Any]) -> None:
        out = sys.stdout
        out.write(json.dumps(message) + "\n")
        out.flush()

    def _absorb_inventory(self, found: dict[str, Any]) -> None:
        inventory = self.inventory
        for name, variables in (found.get("hosts") or {}).items():
            inventory.add_host(name)
            host = inventory.get_host(name)
            for key, value in variables.items():
                host.set_variable(key, value)
        for name, members in (found.get("groups") or {}).items():
            inventory.add_group(name)
            group = inventory.groups[name]
            for host in members.get("hosts") or ():
                group.add_host(inventory.get_host(host))
            for sub in members.get("children") or ():
                inventory.add_group(sub)
                group.add_child_group(inventory.groups[sub])
        inventory.reconcile_inventory()

    # --- the child ------------------------------------------------------------------------

    def _play(self, request: dict[str, Any], events: int, output: int) -> int:
        """Run the request's play as `ansible-playbook` would, on the inventory loaded."""
        os.setsid()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        warnings.filterwarnings("ignore")
        os.environ["MADEUS_JOB"] = str(request["token"])
        os.environ["MADEUS_EVENTS_FD"] = str(events)
        os.environ["MADEUS_RUN"] = str(request["run"])
        from ansible.cli.playbook import PlaybookCLI

        loader, inventory, kept = self.loader, self.inventory, self.kept
        before = _inventory_snapshot(inventory)
        restrict = inventory.restrict_to_hosts

        def batch(hosts: Any) -> None:
            """The playbook executor restricts the inventory to each batch of each play (the
            play's hosts, or a `serial` batch) before running it: say which hosts, when."""
            names = [h if isinstance(h, str) else h.name for h in hosts or ()]
            event = {"e": "batch", "hosts": names, "t": time.monotonic()}
            _write_all(events, (json.dumps(event) + "\n").encode())
            restrict(hosts)

        inventory.restrict_to_hosts = batch
        recorded: list[tuple[str, str, Any]] = []

        class Playbook(PlaybookCLI):  # type: ignore[misc]
            def _play_prereqs(self) -> tuple[Any, Any, Any]:
                return loader, inventory, _variable_manager(loader, inventory, kept, recorded)

        args = ["ansible-playbook", *self.args]
        extra = request.get("extra_vars")
        if isinstance(extra, str) and extra.strip():
            args += ["-e", extra]
        if request.get("forks"):
            args += ["--forks", str(int(request["forks"]))]
        args += ["--limit", ",".join(request["hosts"]), str(request["playbook"])]
        try:
            Playbook.cli_executor(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        state = {
            "e": "state",
            "vm": recorded,
            "inventory": _inventory_changes(before, inventory),
        }
        _write_all(events, (json.dumps(state, default=str) + "\n").encode())
        sys.stdout.flush()
        return code


def _warm_up() -> None:
    """Import once, here, what every play imports (the playbook executor, the strategies,
    connection and callback plugins): each play's fork then finds it loaded."""
    from ansible.executor.playbook_executor import PlaybookExecutor  # noqa: F401
    from ansible.plugins.loader import (
        action_loader,
        become_loader,
        callback_loader,
        connection_loader,
        shell_loader,
        strategy_loader,
    )

    for name in ("linear", "free"):
        strategy_loader.get(name, class_only=True)
    for name in ("normal", "command"):
        action_loader.get(name, class_only=True)
    # What the playbook executor and the task queue manager load on every run.
    for loader in (connection_loader, shell_loader, become_loader, callback_loader):
        for _ in loader.all(class_only=True):
            pass


def _load(args: list[str]) -> tuple[Any, Any]:
    """The loader and inventory `ansible-playbook ARGS` would use (Ansible's `_play_prereqs`),
    without setting Ansible's global command line: each child's own command line does."""
    from ansible import constants as C
    from ansible.cli import CLI
    from ansible.cli.playbook import PlaybookCLI
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader

    cli = PlaybookCLI(["ansible-playbook", *args, os.devnull])
    cli.init_parser()
    options = cli.post_process_args(cli.parser.parse_args(cli.args[1:]))
    paths = options.collections_path if hasattr(options, "collections_path") else None
    init_plugin_loader(paths if isinstance(paths, list) else [p for p in [paths] if p])
    loader = DataLoader()
    secrets = CLI.setup_vault_secrets(
        loader,
        vault_ids=[*C.DEFAULT_VAULT_IDENTITY_LIST, *options.vault_ids],
        vault_password_files=list(options.vault_password_files),
        ask_vault_pass=options.ask_vault_pass,
        auto_prompt=False,
    )
    loader.set_vault_secrets(secrets)
    inventory = InventoryManager(
        loader=loader, sources=options.inventory, cache=not getattr(options, "flush_cache", False)
    )
    return loader, inventory


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _variable_manager(
    loader: Any, inventory: Any, kept: _Kept, recorded: list[tuple[str, str, Any]]
) -> Any:
    """A variable manager for one play (its extra variables are the request's), holding what
    earlier plays left, and recording what this one leaves."""
    from ansible.cli import CLI
    from ansible.vars.manager import VariableManager

    wrap = _wrapper()

    class Recording(VariableManager):  # type: ignore[misc]
        def set_host_facts(self, host: Any, facts: Any) -> None:
            super().set_host_facts(host, facts)
            recorded.append(("facts", str(host), dict(facts)))

        def set_nonpersistent_facts(self, host: Any, facts: Any) -> None:
            super().set_nonpersistent_facts(host, facts)
            recorded.append(("nonpersistent", str(host), dict(facts)))

        def set_host_variable(self, host: Any, varname: str, value: Any) -> None:
            super().set_host_variable(host, varname, value)
            recorded.append(("variable", str(host), (varname, value)))

        def clear_facts(self, hostname: Any) -> None:
            super().clear_facts(hostname)
            recorded.append(("clear", str(hostname), None))

    vm = Recording(loader=loader, inventory=inventory, version_info=CLI.version_info(False))
    for host, facts in kept.facts.items():
        VariableManager.set_host_facts(vm, host, wrap(facts))
    for host, facts in kept.nonpersistent.items():
        VariableManager.set_nonpersistent_facts(vm, host, wrap(facts))
    for host, name, value in kept.variables:
        VariableManager.set_host_variable(vm, host, name, wrap(value))
    return vm


def _wrapper() -> Callable[[Any], Any]:
    """Values coming back from JSON, as Ansible holds data it did not write itself: never
    templated again (2.19 trusts no such string; earlier releases need them marked unsafe)."""
    try:
        from ansible._internal._datatag._tags import TrustedAsTemplate  # noqa: F401
    except ImportError:
        from ansible.utils.unsafe_proxy import wrap_var

        return wrap_var  # type: ignore[no-any-return]
    return lambda value: value


def _inventory_snapshot(inventory: Any) -> dict[str, Any]:
    return {
        "hosts": set(inventory.hosts),
        "groups": {
            name: (
                {h.name for h in group.hosts},
                {g.name for g in group.child_groups},
            )
            for name, group in inventory.groups.items()
        },
    }


def _inventory_changes(before: dict[str, Any], inventory: Any) -> dict[str, Any]:
    """The hosts and group memberships the play added (`add_host`, `group_by`)."""
    hosts = {
        name: dict(inventory.get_host(name).vars)
        for name in inventory.hosts
        if name not in before["hosts"]
    }
    groups: dict[str, Any] = {}
    for name, group in inventory.groups.items():
        old_hosts, old_children = before["groups"].get(name, (set(), set()))
        new_hosts = sorted({h.name for h in group.hosts} - old_hosts)
        new_children = sorted({g.name for g in group.child_groups} - old_children)
        if new_hosts or new_children or name not in before["groups"]:
            groups[name] = {"hosts": new_hosts, "children": new_children}
    return {"hosts": hosts, "groups": groups}


def main(argv: list[str]) -> None:
    private = read_private(first_line_only=True)
    try:
        worker = Worker(argv, private)
    except Exception as exc:  # Ansible's errors (and any other): a document, not a traceback
        Worker._send({"errors": errors_of(exc)})
        sys.exit(1)
    from ansible import __version__

    Worker._send({"ready": __version__})
    worker.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
