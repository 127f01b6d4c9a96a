"""The current configuration of an assembly, and where it comes from (the journal).

A `Configuration` is what a reconfiguration program starts from: the instances with their
component types and hosts, the connections, each instance's marking (the places holding its
tokens; after an interrupted deployment also tokens waiting in docks), and the data values.

It is built from the loaded assembly and one of:
- `deployed(deployment)`: the deployment completed: each instance's tokens are in the places
  its deploy behaviour reaches and no deploy transition leaves (its final deploy places);
- `initial(deployment)`: nothing ran: the tokens are in the initial places;
- `from_journal(deployment, journal_state)`: what the journal (`madeus.engine.journal`) says:
  the markings a reconfiguration recorded last, else what the ended deploy transitions imply.

This module is the only one that knows the journal's interface (`Recorder` writes to it), so a
change there stays here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from madeus import net
from madeus.inventory import LOCAL_HOST, Inventory
from madeus.model import DEFAULT_BEHAVIOUR, ComponentType, Serial, Transition, Value
from madeus.resolve import Deployment, Link
from madeus.source import NO_SPAN, Span

if TYPE_CHECKING:
    from madeus.engine.journal import InventoryKey, Journal

Origin = Literal["deployed", "initial", "journal", "program"]


@dataclass(frozen=True, slots=True)
class InstanceState:
    """One instance: where its tokens are. `out_docks`: transitions whose source place was
    left but which have not started; `in_docks`: transitions that ended while their target
    place is not reached yet (both only after an interrupted deployment)."""

    name: str
    component: ComponentType
    hosts: tuple[str, ...]
    marking: frozenset[str]
    params: Mapping[str, Value] = field(default_factory=dict, compare=False)
    out_docks: frozenset[str] = frozenset()
    in_docks: frozenset[str] = frozenset()
    span: Span = field(default=NO_SPAN, compare=False)
    serial: Serial | None = field(default=None, compare=False)
    # Each batch's places, when a rolling change left its batches apart (`marking` then holds
    # them all); () when they are together.
    batches: tuple[frozenset[str], ...] = field(default=(), compare=False)
    # The parameters as the state of record has them (`madeus.state`), kept there until the
    # behaviours a change runs on the instance have all ended; None: `params`.
    recorded: Mapping[str, object] | None = field(default=None, compare=False)

    @property
    def type(self) -> str:
        return self.component.name

    def parts(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return parts(self.name, self.hosts, self.serial)

    def markings(self) -> tuple[frozenset[str], ...]:
        """The marking of each of `parts()`: each batch's own, if recorded for as many."""
        count = len(self.parts())
        return self.batches if len(self.batches) == count else (self.marking,) * count


def parts(
    name: str, hosts: tuple[str, ...], serial: Serial | None
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """What a change of instance `name` runs as, with the hosts of each: the instance itself,
    or with `serial` its batches `name#1`, `name#2`... one after the other (a single batch is
    the instance itself)."""
    batches = serial.batches(hosts) if serial is not None else ()
    if len(batches) <= 1:
        return ((name, hosts),)
    return tuple((f"{name}#{k}", batch) for k, batch in enumerate(batches, 1))


@dataclass(frozen=True, slots=True)
class Configuration:
    assembly: str
    instances: tuple[InstanceState, ...]
    links: tuple[Link, ...]
    data: Mapping[str, str] = field(default_factory=dict, compare=False)  # "instance.port"
    components: Mapping[str, ComponentType] = field(default_factory=dict, compare=False)
    inventory: Inventory = field(default_factory=Inventory.local_default, compare=False)
    origin: Origin = field(default="deployed", compare=False)
    deployment: Deployment | None = field(default=None, compare=False, repr=False)

    def instance(self, name: str) -> InstanceState:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise KeyError(name)

    def has(self, name: str) -> bool:
        return any(inst.name == name for inst in self.instances)

    def marking(self, name: str) -> frozenset[str]:
        return self.instance(name).marking

    def provider_of(self, user: str, port: str) -> Link | None:
        return next((lk for lk in self.links if lk.user == user and lk.user_port == port), None)

    def markings(self) -> dict[str, frozenset[str]]:
        return {inst.name: inst.marking for inst in self.instances}


# --- building configurations ------------------------------------------------------------


def final_places(component: ComponentType) -> frozenset[str]:
    """Where a complete deployment leaves the tokens: the initial places and the targets of
    deploy transitions that no deploy transition leaves."""
    deploy = component.transitions_of(DEFAULT_BEHAVIOUR)
    touched = set(component.initial_places) | {t.target for t in deploy}
    left = {t.source for t in deploy}
    return frozenset(p for p in touched if p not in left)


def _base(deployment: Deployment, origin: Origin) -> dict[str, Any]:
    return {
        "assembly": deployment.name,
        "links": net.links(net.compile(deployment)),
        "components": {c.name: c for c in deployment.assembly.components},
        "inventory": deployment.inventory,
        "origin": origin,
        "deployment": deployment,
    }


def deployed(deployment: Deployment, data: Mapping[str, str] | None = None) -> Configuration:
    """The configuration after a complete deployment."""
    instances = tuple(
        InstanceState(
            i.name,
            i.component,
            i.hosts,
            final_places(i.component),
            i.params,
            span=i.span,
            serial=i.serial,
        )
        for i in deployment.instances
    )
    return Configuration(
        instances=instances, data=dict(data or {}), **_base(deployment, "deployed")
    )


def initial(deployment: Deployment) -> Configuration:
    """The configuration before anything ran."""
    instances = tuple(
        InstanceState(
            i.name,
            i.component,
            i.hosts,
            frozenset(i.component.initial_places),
            i.params,
            span=i.span,
            serial=i.serial,
        )
        for i in deployment.instances
    )
    return Configuration(instances=instances, **_base(deployment, "initial"))


class JournalView(Protocol):
    """What this module reads of `madeus.engine.journal.JournalState`."""

    @property
    def ended(self) -> frozenset[tuple[str, str]]: ...

    @property
    def data(self) -> Mapping[str, str]: ...

    @property
    def markings(self) -> Mapping[str, frozenset[str]]: ...

    @property
    def instances(self) -> Mapping[str, str] | None: ...

    @property
    def batch_markings(self) -> Mapping[str, tuple[frozenset[str], ...]]: ...


def from_journal(deployment: Deployment, journal: JournalView) -> Configuration:
    """The configuration the journal describes. Instances the journal lists but the assembly
    does not (added by a program) are placed on the local machine: the journal keeps their
    type only. Connections are the assembly's (the journal does not record connections).
    `read_configuration` and `journal_configuration` then restore both from the state of
    record (`madeus.state.restore`)."""
    components = {c.name: c for c in deployment.assembly.components}
    listed = journal.instances
    instances: list[InstanceState] = []
    shapes: dict[int, _Deploy] = {}  # by component type (instances share theirs)
    for inst in deployment.instances:
        if listed is not None and inst.name not in listed:
            continue  # removed by a program
        marking = journal.markings.get(inst.name)
        if marking is not None:
            known = {p.name for p in inst.component.places}
            batches = journal.batch_markings.get(inst.name, ())
            instances.append(
                InstanceState(
                    inst.name,
                    inst.component,
                    inst.hosts,
                    frozenset(p for p in marking if p in known),
                    inst.params,
                    span=inst.span,
                    serial=inst.serial,
                    batches=tuple(frozenset(p for p in b if p in known) for b in batches),
                )
            )
            continue
        shape = shapes.get(id(inst.component))
        if shape is None:
            shape = shapes[id(inst.component)] = _Deploy.of(inst.component)
        derived = _derive(
            inst.name, inst.component, inst.hosts, inst.params, inst.span, journal.ended, shape
        )
        instances.append(replace(derived, serial=inst.serial))
    present = {i.name for i in instances}
    for name, type_name in (listed or {}).items():
        component = components.get(type_name)
        if name in present or component is None:
            continue
        marking = journal.markings.get(name, frozenset(component.initial_places))
        params = {p.name: p.default for p in component.params if p.default is not None}
        instances.append(InstanceState(name, component, (LOCAL_HOST,), frozenset(marking), params))
    present = {i.name for i in instances}
    base = _base(deployment, "journal")
    base["links"] = tuple(
        lk for lk in base["links"] if lk.user in present and lk.provider in present
    )
    return Configuration(instances=tuple(instances), data=dict(journal.data), **base)


@dataclass(frozen=True, slots=True)
class _Deploy:
    """A component type's deploy behaviour, as `_derive` reads it (once per type)."""

    transitions: tuple[Transition, ...]
    entering: Mapping[str, tuple[str, ...]]
    leaving: Mapping[str, tuple[str, ...]]
    initial: frozenset[str]

    @staticmethod
    def of(component: ComponentType) -> _Deploy:
        deploy = component.transitions_of(DEFAULT_BEHAVIOUR)
        entering: dict[str, list[str]] = {}
        leaving: dict[str, list[str]] = {}
        for t in deploy:
            entering.setdefault(t.target, []).append(t.name)
            leaving.setdefault(t.source, []).append(t.name)
        return _Deploy(
            deploy,
            {p: tuple(ts) for p, ts in entering.items()},
            {p: tuple(ts) for p, ts in leaving.items()},
            frozenset(component.initial_places),
        )


def _derive(
    name: str,
    component: ComponentType,
    hosts: tuple[str, ...],
    params: Mapping[str, Value],
    span: Span,
    ended_jobs: frozenset[tuple[str, str]],
    shape: _Deploy | None = None,
) -> InstanceState:
    """Where the ended deploy transitions leave the tokens. A transition ended when it ended on
    every host of the instance. A reached place whose leaving transitions have not ended keeps
    its token when none of them ended (the place is still where the instance is), else those
    not ended wait in their output docks (a resumed deploy runs them)."""
    deploy = shape if shape is not None else _Deploy.of(component)
    ended = {
        t.name
        for t in deploy.transitions
        if hosts and all((f"{name}.{t.name}", h) in ended_jobs for h in hosts)
    }
    reached = set(deploy.initial)
    reached.update(p for p, ts in deploy.entering.items() if all(t in ended for t in ts))
    targets = {t.name: t.target for t in deploy.transitions if t.name in ended}
    in_docks = {t for t, target in targets.items() if target not in reached}
    marking: set[str] = set()
    out_docks: set[str] = set()
    for p in reached:
        out = deploy.leaving.get(p, ())
        if not any(t in ended for t in out):
            marking.add(p)
        else:
            out_docks.update(t for t in out if t not in ended)
    return InstanceState(
        name,
        component,
        hosts,
        frozenset(marking),
        params,
        frozenset(out_docks),
        frozenset(in_docks),
        span,
    )


def nothing_recorded(journal: Any) -> bool:
    """True when the journal holds no run at all (nothing was ever deployed from it)."""
    return not getattr(journal, "runs", ()) and not getattr(journal, "markings", {})


# --- the journal ------------------------------------------------------------------------


def open_state_journal(
    mad_path: str | os.PathLike[str],
    inventory: InventoryKey,
    *,
    simulate: bool = False,
    base: str | os.PathLike[str] | None = None,
) -> Journal:
    """Open (and lock) the journal of this assembly file and inventory (`simulate`: the
    journal of its simulated runs, which a rehearsal reads and writes) under `base`
    (default: `madeus.state.locate`)."""
    from madeus.engine.journal import open_journal
    from madeus.state import locate

    if base is None:
        base = locate(mad_path, inventory, simulate=simulate)
    return open_journal(mad_path, inventory, simulate=simulate, base=base)


def read_configuration(
    deployment: Deployment,
    mad_path: str | os.PathLike[str],
    inventory: InventoryKey,
    *,
    simulate: bool = False,
    base: str | os.PathLike[str] | None = None,
) -> Configuration | None:
    """The configuration the journal describes, read without taking its lock; None when the
    journal records nothing (never deployed)."""
    from madeus.engine.journal import read_journal
    from madeus.state import locate

    if base is None:
        base = locate(mad_path, inventory, simulate=simulate)
    state, _, directory = read_journal(mad_path, inventory, simulate=simulate, base=base)
    if nothing_recorded(state):
        return None
    return _restored(from_journal(deployment, state), directory)


def journal_configuration(deployment: Deployment, journal: Journal) -> Configuration | None:
    """The configuration an open journal describes; None when it records nothing."""
    state = journal.state()
    if nothing_recorded(state):
        return None
    return _restored(from_journal(deployment, state), journal.directory)


def _restored(configuration: Configuration, directory: Path) -> Configuration:
    """With what the state of record keeps and the journal does not (`madeus.state.restore`):
    the hosts and parameters of added instances, the connections the last run left."""
    from madeus.state import load, restore

    return restore(configuration, load(directory))


class Recorder:
    """Writes what a reconfiguration changes to the journal, durably: a run record (appended:
    the deployment's records stay), then each instance's marking whenever it changes, the
    instance set when a program adds or removes instances, and the run's end.

    A marking is recorded with the token of a transition that has not finished (running,
    waiting to start, or ended but waiting for the other transitions entering its target)
    counted in the transition's source place: pushing the behaviour again re-runs it."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def begin(self, run_id: str, run_dir: Path | None) -> None:
        self.journal.begin_run(run_id, resume=True, run_dir=run_dir)

    def marking(
        self, instance: str, places: Iterable[str], batches: Iterable[Iterable[str]] = ()
    ) -> None:
        self.journal.record_marking(instance, places, batches=batches, flush=False)

    def instances(self, instances: Mapping[str, str]) -> None:
        self.journal.record_instances(instances, flush=False)

    def data(self, port: str, value: str) -> None:
        self.journal.record_data(port, value, flush=False)

    def end(self, status: str) -> None:
        self.journal.end_run(status)

    def record_state(self, configuration: Configuration) -> None:
        """Write the state of record (`madeus.state`) the program left."""
        from madeus.engine.journal import JournalError
        from madeus.errors import StateError
        from madeus.state import write_configuration

        try:
            write_configuration(self.journal, configuration)
        except StateError as exc:
            raise JournalError(exc.diagnostics) from None
