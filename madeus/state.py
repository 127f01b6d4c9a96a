"""The state of record of a deployment: what runs where, as the last run left it.

One directory per assembly file and inventory (the journal's, `madeus.engine.journal`), kept
beside the assembly (`<its directory>/.madeus/state/<key>/`) unless `--state DIR` or
`$MADEUS_STATE` names another base: never under the working directory, so that `madeus status`
or `madeus plan` from anywhere finds the same state. It holds the journal (every start and end,
durable as it happens, locked by the run that writes it) and `state.json`, the record written
atomically at the end of every run:

    {"format": "madeus-state", "version": 1, "assembly": NAME, "file": MAD, "inventory": INV,
     "updated_at": ISO, "complete": BOOL,
     "instances": [{"name": N, "type": T, "hosts": [...], "params": {...}, "places": [...]}],
     "connections": [{"user": N, "use": P, "provider": N, "provide": P}],
     "data": {"INSTANCE.PORT": VALUE},
     "runs": [{"id": ID, "started_at": ISO, "status": S, "resume": BOOL, "command": [...]}]}

Parameters keep their values, except that a `secret` parameter is a reference, never a value
(`{"secret": "env:NAME"}`, or `{"secret": "literal"}` for one written in the file) and an
`env("NAME")` value is `{"env": "NAME"}`. `complete`: every deploy transition of every instance
ended on all its hosts. `places`: where each instance's tokens are; `batches` (only for an
instance whose rolling change stopped with its batches in different places): each batch's.

`changes(record, deployment)` is what `madeus plan` shows: the instances to add, to remove, to
change (type, hosts, parameters) and the connections to add or remove.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from madeus import net
from madeus.engine.journal import (
    JOURNAL_FILE,
    STATE_ENV,
    Journal,
    JournalState,
    base_dir,
    state_key,
)
from madeus.engine.runlog import make_private_dir, open_private
from madeus.errors import Diagnostic, StateError
from madeus.model import EnvRef, Value
from madeus.reconfig.state import Configuration, InstanceState, final_places, from_journal
from madeus.resolve import Deployment, Link, ResolvedInstance
from madeus.source import Span
from madeus.trace import dumps_lines

__all__ = [
    "STATE_ENV",
    "STATE_FILE",
    "Changes",
    "ConnectionRecord",
    "InstanceRecord",
    "Record",
    "StateError",
    "base_dir",
    "changes",
    "load",
    "locate",
    "record_of",
    "recorded",
    "restore",
    "save",
    "write_configuration",
    "write_deployed",
]

STATE_FILE = "state.json"
FORMAT = "madeus-state"
VERSION = 1
LEGACY_BASE = Path(".madeus") / "state"  # where madeus kept states before: the working dir

Json = Any


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    name: str
    type: str
    hosts: tuple[str, ...]
    params: Mapping[str, Json] = field(default_factory=dict)
    places: tuple[str, ...] = ()
    batches: tuple[tuple[str, ...], ...] = ()  # each batch's places, when apart (`serial`)


@dataclass(frozen=True, slots=True, order=True)
class ConnectionRecord:
    user: str
    use: str
    provider: str
    provide: str

    def __str__(self) -> str:
        return f"{self.user}.{self.use} -> {self.provider}.{self.provide}"


@dataclass(frozen=True, slots=True)
class Record:
    assembly: str
    file: str
    inventory: str | None
    updated_at: str
    complete: bool
    instances: tuple[InstanceRecord, ...]
    connections: tuple[ConnectionRecord, ...]
    data: Mapping[str, str] = field(default_factory=dict)
    runs: tuple[Mapping[str, Json], ...] = ()

    def to_json(self) -> dict[str, Json]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "assembly": self.assembly,
            "file": self.file,
            "inventory": self.inventory,
            "updated_at": self.updated_at,
            "complete": self.complete,
            "instances": [
                {
                    "name": i.name,
                    "type": i.type,
                    "hosts": list(i.hosts),
                    "params": dict(i.params),
                    "places": list(i.places),
                    **({"batches": [list(b) for b in i.batches]} if i.batches else {}),
                }
                for i in self.instances
            ],
            "connections": [
                {"user": c.user, "use": c.use, "provider": c.provider, "provide": c.provide}
                for c in self.connections
            ],
            "data": dict(self.data),
            "runs": [dict(r) for r in self.runs],
        }


# --- where ------------------------------------------------------------------------------------


def locate(
    mad_path: str | os.PathLike[str],
    inventory: Any,
    *,
    override: str | os.PathLike[str] | None = None,
    simulate: bool = False,
) -> Path:
    """The base directory of this deployment's state (`base_dir`). Raise StateError when
    nothing is there yet but a state of it is in the working directory, where madeus kept
    states before: the operator moves it (or names it with --state), nothing is guessed."""
    base = base_dir(mad_path, override)
    if override is not None or os.environ.get(STATE_ENV):
        return base
    key = state_key(mad_path, inventory, simulate=simulate)
    legacy = LEGACY_BASE / key
    if (
        not (base / key).exists()
        and (legacy / JOURNAL_FILE).exists()
        and legacy.resolve() != (base / key).resolve()
    ):
        raise StateError(
            [
                Diagnostic(
                    "state",
                    f"this deployment's state is in {legacy}/ (under the working directory, "
                    f"where madeus kept states before); states are now kept beside the "
                    f"assembly: move it to {base / key}/, or pass --state {LEGACY_BASE}",
                    Span(os.fspath(mad_path), 0, 0, 0, 0),
                )
            ]
        )
    return base


# --- the record ---------------------------------------------------------------------------------


def _param(value: Value, secret: bool) -> Json:
    if secret:
        return {"secret": f"env:{value.name}" if isinstance(value, EnvRef) else "literal"}
    if isinstance(value, EnvRef):
        return {"env": value.name}
    return value


def _desired(inst: ResolvedInstance | InstanceState) -> InstanceRecord:
    """An instance as the record keeps it (no places: what is wanted, not where it is)."""
    declared = inst.component.params
    secret = {p.name for p in declared if p.secret}
    # What the instance runs with: the type's defaults, then its arguments.
    values = {p.name: p.default for p in declared if p.default is not None}
    values.update(inst.params)
    params = {k: _param(v, k in secret) for k, v in sorted(values.items())}
    return InstanceRecord(inst.name, inst.component.name, tuple(inst.hosts), params)


def recorded_params(inst: ResolvedInstance | InstanceState) -> Mapping[str, Json]:
    """An instance's parameters as the record keeps them (secrets as references)."""
    return _desired(inst).params


def _connections(compiled: net.Net) -> tuple[ConnectionRecord, ...]:
    return tuple(
        sorted(
            ConnectionRecord(lk.user, lk.user_port, lk.provider, lk.provider_port)
            for lk in net.links(compiled)
        )
    )


def _places(instance: InstanceState) -> tuple[str, ...]:
    """The places of record: a transition that has not finished (a failed or interrupted run)
    counts in its source place, as in the journal: its behaviour runs it again."""
    places = set(instance.marking)
    for name in instance.out_docks | instance.in_docks:
        transition = instance.component.transition(name)
        if transition is not None:
            places.add(transition.source)
    return tuple(sorted(places))


def record_of(
    configuration: Configuration,
    journal: JournalState,
    *,
    file: str | os.PathLike[str],
    inventory: str | None,
    complete: bool,
) -> Record:
    """The record of `configuration` (what a run left: instances with their hosts, parameters
    and places, connections, data values) and of the journal's runs."""
    instances = tuple(
        InstanceRecord(
            d.name,
            d.type,
            d.hosts,
            cast(Mapping[str, Json], i.recorded) if i.recorded is not None else d.params,
            _places(i),
            tuple(tuple(sorted(b)) for b in i.batches),
        )
        for i in configuration.instances
        for d in (_desired(i),)
    )
    runs = tuple(
        {
            "id": r.id,
            "started_at": r.started_at,
            "status": r.status,
            "resume": r.resume,
            "command": list(r.command),
        }
        for r in journal.runs
    )
    connections = tuple(
        sorted(
            ConnectionRecord(lk.user, lk.user_port, lk.provider, lk.provider_port)
            for lk in configuration.links
        )
    )
    return Record(
        configuration.assembly,
        os.path.realpath(os.fspath(file)),
        inventory,
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        complete,
        instances,
        connections,
        dict(journal.data),
        runs,
    )


def write_deployed(journal: Journal, deployment: Deployment) -> Path:
    """Record what a deployment run left (`deploy`, resumed or not) in `journal`'s directory.
    After a `--limit` run (a part of the deployment), the instances the part left out or ran
    on fewer hosts keep their previous record."""
    state = journal.state()
    previous = load(journal.directory) if deployment.narrowed is not None else None
    return _write(journal, from_journal(deployment, state), state, previous, deployment.narrowed)


def write_configuration(journal: Journal, configuration: Configuration) -> Path:
    """Record what a reconfiguration program left (`reconfigure`, `destroy`)."""
    return _write(journal, configuration, journal.state())


def _write(
    journal: Journal,
    configuration: Configuration,
    state: JournalState,
    previous: Record | None = None,
    narrowed: frozenset[str] | None = None,
) -> Path:
    file = journal.file or configuration.assembly
    complete = _complete(configuration, state)
    record = record_of(
        configuration, state, file=file, inventory=journal.inventory, complete=complete
    )
    if previous is not None:
        record = _kept(record, previous, narrowed or frozenset())
    return save(record, journal.directory)


def _kept(record: Record, previous: Record, narrowed: frozenset[str]) -> Record:
    """The record of a part of the deployment merged into the previous record: the part's
    instances where it ran them on all their hosts, the previous record for the others."""
    fresh = {i.name: i for i in record.instances if i.name not in narrowed}
    instances = [fresh.pop(i.name, i) for i in previous.instances]
    instances += fresh.values()
    names = {i.name for i in record.instances if i.name not in narrowed}
    connections = set(record.connections) | {c for c in previous.connections if c.user not in names}
    return replace(
        record,
        instances=tuple(instances),
        connections=tuple(sorted(connections)),
        complete=record.complete and previous.complete,
    )


def _complete(configuration: Configuration, state: JournalState) -> bool:
    """The last run ended ok and left every instance deployed: its tokens in the places its
    deploy behaviour reaches last (not so after `destroy`, or a program that stops a service)."""
    last = state.last_run
    return (
        last is not None
        and last.status == "ok"
        and all(i.marking == final_places(i.component) for i in configuration.instances)
    )


def recorded(deployment: Deployment, directory: str | os.PathLike[str]) -> Record | None:
    """The record in this deployment's state `directory`; None when nothing was ever run. A
    journal written before the state of record (no `state.json`) gives its record now: the
    places from what ended, the hosts and parameters from the files as they are (the journal
    does not have the old ones)."""
    from madeus.engine.journal import read_state

    found = load(directory)
    if found is not None:
        return found
    state = read_state(Path(directory) / JOURNAL_FILE)
    if not state.runs:
        return None
    configuration = from_journal(deployment, state)
    file = deployment.assembly.span.path or deployment.name
    complete = _complete(configuration, state)
    return record_of(configuration, state, file=file, inventory=None, complete=complete)


def save(record: Record, directory: str | os.PathLike[str]) -> Path:
    """Write `state.json` in `directory` atomically: a reader sees the old record or the new,
    never half of one, even after a crash."""
    target = Path(directory) / STATE_FILE
    temporary = target.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    try:
        make_private_dir(Path(directory))
        with os.fdopen(open_private(temporary), "w", encoding="utf-8") as out:
            out.write(dumps_lines(record.to_json()))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
        folder = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as error:
        raise StateError(
            [
                Diagnostic(
                    "state",
                    f"cannot write the state: {error.strerror or error}",
                    Span(os.fspath(error.filename or target), 0, 0, 0, 0),
                )
            ]
        ) from None
    return target


def load(path: str | os.PathLike[str]) -> Record | None:
    """The record in `path` (a state directory or its `state.json`); None when there is none.
    Raise StateError when it cannot be read or is not a state this version knows."""
    target = Path(path)
    if target.is_dir():
        target = target / STATE_FILE
    where = Span(os.fspath(target), 0, 0, 0, 0)
    try:
        raw = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StateError([Diagnostic("state", f"cannot read the state: {error}", where)]) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise StateError([Diagnostic("state", "not a madeus state file", where)])
    if raw.get("version") != VERSION:
        raise StateError(
            [
                Diagnostic(
                    "state",
                    f"state format version {raw.get('version')!r}: this madeus reads "
                    f"version {VERSION}",
                    where,
                )
            ]
        )
    try:
        return Record(
            str(raw["assembly"]),
            str(raw["file"]),
            raw.get("inventory"),
            str(raw["updated_at"]),
            bool(raw["complete"]),
            tuple(
                InstanceRecord(
                    str(i["name"]),
                    str(i["type"]),
                    tuple(i["hosts"]),
                    dict(i["params"]),
                    tuple(i["places"]),
                    tuple(tuple(b) for b in i.get("batches", ())),
                )
                for i in raw["instances"]
            ),
            tuple(
                ConnectionRecord(c["user"], c["use"], c["provider"], c["provide"])
                for c in raw["connections"]
            ),
            dict(raw.get("data", {})),
            tuple(raw.get("runs", ())),
        )
    except (KeyError, TypeError, ValueError) as error:
        message = f"a damaged state file ({type(error).__name__}: {error})"
        raise StateError([Diagnostic("state", message, where)]) from None


# --- what changed -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Changes:
    """The deployment described by the files against the record: instances to add, to remove
    and to change (with what changed in words), connections to add and to remove."""

    added: tuple[InstanceRecord, ...] = ()
    removed: tuple[InstanceRecord, ...] = ()
    changed: tuple[tuple[InstanceRecord, tuple[str, ...]], ...] = ()
    connected: tuple[ConnectionRecord, ...] = ()
    disconnected: tuple[ConnectionRecord, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.added or self.removed or self.changed or self.connected or self.disconnected
        )

    def summary(self) -> str:
        """`2 to add, 1 to change, 0 to remove` and the connections, as Terraform says it."""
        text = (
            f"{len(self.added)} to add, {len(self.changed)} to change, "
            f"{len(self.removed)} to remove"
        )
        if self.connected or self.disconnected:
            added, removed = len(self.connected), len(self.disconnected)
            text += f"; {added} connections to add, {removed} to remove"
        return text

    def lines(self) -> list[str]:
        out = [f"  + {i.name} ({i.type}) on {', '.join(i.hosts) or 'no host'}" for i in self.added]
        for inst, what in self.changed:
            out.append(f"  ~ {inst.name} ({inst.type})")
            out.extend(f"      {line}" for line in what)
        out += [f"  - {i.name} ({i.type})" for i in self.removed]
        out += [f"  + connect {c}" for c in self.connected]
        out += [f"  - connect {c}" for c in self.disconnected]
        return out

    def to_json(self) -> dict[str, Json]:
        return {
            "add": [i.name for i in self.added],
            "change": {i.name: list(what) for i, what in self.changed},
            "remove": [i.name for i in self.removed],
            "connect": [str(c) for c in self.connected],
            "disconnect": [str(c) for c in self.disconnected],
        }


def _shown(value: Json) -> str:
    return json.dumps(value, sort_keys=True)


def _differences(was: InstanceRecord, now: InstanceRecord) -> tuple[str, ...]:
    what: list[str] = []
    if was.type != now.type:
        what.append(f"type: {was.type} -> {now.type}")
    if was.hosts != now.hosts:
        what.append(f"hosts: {', '.join(was.hosts)} -> {', '.join(now.hosts)}")
    for name in sorted(set(was.params) | set(now.params)):
        before, after = was.params.get(name), now.params.get(name)
        if before != after:
            what.append(f"{name}: {_shown(before)} -> {_shown(after)}")
    return tuple(what)


def changes(record: Record | None, deployment: Deployment, *, partial: bool = False) -> Changes:
    """What applying `deployment` would change in `record` (None: nothing deployed yet, so
    everything is to add). `partial` (`--limit`): the deployment is a part of the whole, so
    what it lacks is not to remove."""
    desired = [_desired(i) for i in deployment.instances]
    connections = _connections(net.compile(deployment))
    if record is None:
        return Changes(added=tuple(desired), connected=connections)
    recorded = {i.name: i for i in record.instances}
    wanted = {i.name for i in desired}
    changed = []
    for inst in desired:
        was = recorded.get(inst.name)
        if was is not None:
            what = _differences(was, inst)
            if what:
                changed.append((inst, what))
    old = set(record.connections)
    new = set(connections)
    return Changes(
        added=tuple(i for i in desired if i.name not in recorded),
        removed=() if partial else tuple(i for i in record.instances if i.name not in wanted),
        changed=tuple(changed),
        connected=tuple(c for c in connections if c not in old),
        disconnected=() if partial else tuple(sorted(old - new)),
    )


# --- what a reconfiguration starts from -------------------------------------------------------


def restore(configuration: Configuration, record: Record | None) -> Configuration:
    """`configuration` (what the journal says, `reconfig.state.from_journal`) with what only the
    record keeps: the hosts and parameters of the instances a program added (the journal has
    their type only) and the connections as the last run left them. A secret parameter's value
    is not recorded: an added instance gets it back only from an `env()` reference."""
    if record is None:
        return configuration
    recorded = {i.name: i for i in record.instances}
    declared = set()
    if configuration.deployment is not None:
        declared = {i.name for i in configuration.deployment.instances}
    instances = []
    for inst in configuration.instances:
        was = recorded.get(inst.name)
        if inst.name in declared or was is None or was.type != inst.type:
            instances.append(inst)
            continue
        params = recorded_values(was.params)
        instances.append(replace(inst, hosts=tuple(was.hosts) or inst.hosts, params=params))
    present = {i.name for i in instances}
    kept = {(c.user, c.use, c.provider, c.provide) for c in record.connections}
    # The assembly's links that are still there keep their source spans; then those a
    # program made.
    links = [lk for lk in configuration.links if _key(lk) in kept]
    known = {_key(lk) for lk in links}
    links += [Link(*key) for key in sorted(kept - known) if key[0] in present and key[2] in present]
    return replace(configuration, instances=tuple(instances), links=tuple(links))


def _key(link: Link) -> tuple[str, str, str, str]:
    return (link.user, link.user_port, link.provider, link.provider_port)


def recorded_values(params: Mapping[str, Json]) -> dict[str, Value]:
    """An instance's recorded parameters back as model values; a secret that was written in
    the file (not an `env()` reference) has no value to come back and is left out."""
    found = {k: recorded_value(v) for k, v in params.items()}
    return {k: v for k, v in found.items() if v is not None}


def recorded_value(recorded: Json) -> Value | None:
    """A recorded parameter back as a model value; None for a secret written in the file."""
    if isinstance(recorded, dict):
        if "env" in recorded:
            return EnvRef(str(recorded["env"]))
        reference = str(recorded.get("secret", ""))
        return EnvRef(reference[4:]) if reference.startswith("env:") else None
    if isinstance(recorded, str | int | float | bool):
        return recorded
    return None
