"""The executable form of a plan: integer-indexed arrays the executor walks without allocating.

Transitions are numbered in plan order; each (transition, host) pair is a *job*, numbered so that
the jobs of transition i are `job_base[i] .. job_base[i + 1] - 1`. Dependencies become counters:
`pending[i]` = len(after) + the number of its entries of alternatives
(`PlanTransition.alternatives()`); ending transition i decrements its `and_succ`, and the
alternatives it belongs to (`alt_succ`, counted down from `alt_size`); the first alternative
of an entry to be complete decrements the waiting transition once (the entry's slot is then
marked satisfied).

Data ports need to know when a place is reached: only the places bound to a data provide port
are tracked (`reach[i]` = the tracked place transition i enters, or -1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from madeus.engine.values import action_dir
from madeus.inventory import Host
from madeus.model import OutputOf, ProvidePort, Transition
from madeus.net import Net
from madeus.plan import Plan


@dataclass(frozen=True, slots=True)
class DataProvide:
    instance: str
    port: ProvidePort
    host: Host | None  # the provider's first host: `{host.*}` in the value, `output of T`
    producer: int = -1  # for `output of T`: the index of T


@dataclass(frozen=True, slots=True)
class DataUse:
    port: str  # the user's port name: the placeholder `{port}`
    provider: str
    provider_port: str


@dataclass(frozen=True, slots=True)
class Program:
    ids: tuple[str, ...]
    instance_of: tuple[str, ...]
    transitions: tuple[Transition, ...]  # the model transition of each index
    pending: tuple[int, ...]  # initial dependency counters
    and_succ: tuple[tuple[int, ...], ...]
    alt_succ: tuple[tuple[int, ...], ...]  # alternatives each transition belongs to
    alt_size: tuple[int, ...]  # per alternative: the transitions that must end
    alt_slot: tuple[int, ...]  # per alternative: its entry
    slot_owner: tuple[int, ...]  # per entry: the transition waiting on it
    priority: tuple[float, ...]  # Plan.remaining, per transition
    hosts: tuple[Host, ...]  # every host used, by host index
    job_base: tuple[int, ...]  # len(ids) + 1 entries
    job_trans: tuple[int, ...]
    job_host: tuple[int, ...]
    reach: tuple[int, ...]  # tracked place entered by each transition, or -1
    place_left: tuple[int, ...]  # per tracked place: transitions that must end to reach it
    place_provides: tuple[tuple[DataProvide, ...], ...]  # per tracked place
    initially_reached: tuple[int, ...]  # tracked places that are initial
    output_needed: frozenset[int]  # transitions whose stdout feeds a data port
    data_uses: Mapping[str, tuple[DataUse, ...]]  # per using instance
    workdir: Mapping[str, Path]  # per instance: the directory of its component's .mad file

    @property
    def jobs(self) -> int:
        return self.job_base[-1]


def compile_program(compiled: Net, plan: Plan) -> Program:
    """What the executor runs: `plan`'s transitions numbered, what each waits for, the jobs
    (transition x host), and the data ports, read off the dependency net `compiled`."""
    index = {t.id: i for i, t in enumerate(plan.transitions)}
    n = len(plan.transitions)
    inventory = compiled.deployment.inventory
    model: dict[tuple[str, str], Transition] = {}
    for node in compiled.instances:
        for t in node.shape.deploy:
            model[(node.name, t.name)] = t

    and_succ: list[list[int]] = [[] for _ in range(n)]
    alt_succ: list[list[int]] = [[] for _ in range(n)]
    alt_size: list[int] = []
    alt_slot: list[int] = []
    slot_owner: list[int] = []
    pending: list[int] = []
    host_index: dict[str, int] = {}
    hosts: list[Host] = []
    job_base = [0]
    job_trans: list[int] = []
    job_host: list[int] = []
    for i, step in enumerate(plan.transitions):
        entries = step.alternatives()
        pending.append(len(step.after) + len(entries))
        for dep in step.after:
            and_succ[index[dep]].append(i)
        for entry in entries:
            for alternative in entry:
                members = set(alternative)
                for dep in members:
                    alt_succ[index[dep]].append(len(alt_size))
                alt_size.append(len(members))
                alt_slot.append(len(slot_owner))
            slot_owner.append(i)
        for name in step.hosts:
            h = host_index.get(name)
            if h is None:
                h = host_index[name] = len(hosts)
                hosts.append(inventory.host(name))
            job_trans.append(i)
            job_host.append(h)
        job_base.append(len(job_trans))

    reach = [-1] * n
    place_left: list[int] = []
    place_provides: list[tuple[DataProvide, ...]] = []
    initially: list[int] = []
    output_needed: set[int] = set()
    for inst in compiled.instances:
        component = inst.shape.component
        by_place: dict[str, list[DataProvide]] = {}
        first = inst.hosts[0] if inst.hosts else None
        host = None if first is None else inventory.host(first)
        for port in component.provides:
            if port.kind != "data":
                continue
            producer = -1
            if isinstance(port.value, OutputOf):
                producer = index.get(f"{inst.name}.{port.value.transition}", -1)
                if producer >= 0:
                    output_needed.add(producer)
            for place in port.places:
                by_place.setdefault(place, []).append(DataProvide(inst.name, port, host, producer))
        initial = inst.shape.initial
        for place, provides in by_place.items():
            p = len(place_left)
            entering = [
                index[f"{inst.name}.{t}"]
                for t in inst.shape.entering.get(place, ())
                if f"{inst.name}.{t}" in index
            ]
            for i in entering:
                reach[i] = p
            place_left.append(len(entering))
            place_provides.append(tuple(provides))
            if place in initial:
                initially.append(p)

    data_uses: dict[str, list[DataUse]] = {}
    users = {inst.name: inst.shape.component for inst in compiled.instances}
    for (user, use_name), served in compiled.provider.items():
        use = users[user].use(use_name)
        if use is not None and use.kind == "data" and served.port is not None:
            data_uses.setdefault(user, []).append(
                DataUse(use_name, served.instance.name, served.port.name)
            )

    workdir = {inst.name: action_dir(inst.shape.component) for inst in compiled.instances}
    return Program(
        ids=tuple(t.id for t in plan.transitions),
        instance_of=tuple(t.instance for t in plan.transitions),
        transitions=tuple(model[(t.instance, t.name)] for t in plan.transitions),
        pending=tuple(pending),
        and_succ=tuple(map(tuple, and_succ)),
        alt_succ=tuple(map(tuple, alt_succ)),
        alt_size=tuple(alt_size),
        alt_slot=tuple(alt_slot),
        slot_owner=tuple(slot_owner),
        priority=tuple(plan.remaining.get(t.id, t.duration) for t in plan.transitions),
        hosts=tuple(hosts),
        job_base=tuple(job_base),
        job_trans=tuple(job_trans),
        job_host=tuple(job_host),
        reach=tuple(reach),
        place_left=tuple(place_left),
        place_provides=tuple(place_provides),
        initially_reached=tuple(initially),
        output_needed=frozenset(output_needed),
        data_uses={k: tuple(v) for k, v in data_uses.items()},
        workdir=workdir,
    )
