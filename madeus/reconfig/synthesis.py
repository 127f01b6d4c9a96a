"""The reconfiguration program that takes a deployment from its state of record to what the
files describe (`madeus plan` shows it, `madeus apply` runs it; docs/reconfiguration.md).

`synthesise(record, deployment)` starts from the record (each instance where its tokens are,
on the hosts it was deployed on, with the parameters the files give it now) and writes:

- an instance the files add: `add` (on the hosts the files place it), its connections, `push
  deploy`;
- an instance the files remove: the behaviours that take it back to its initial places (most
  often `uninstall`), then `remove`. Removed users go before their removed providers, wave by
  wave: the safety rule keeps a provider in its group while a use is in progress, but not for
  a use that a user's uninstall has yet to make;
- a parameter changed: the behaviours the component type declares for it (`on change of
  version: update`); without one the instance is redeployed (back to its initial places, then
  `deploy`), and the notes say so. A type or a placement changed is refused (a program cannot
  remove a name and add it again): another name, or `deploy --redeploy`;
- an instance not where its deploy behaviour leaves it (a failed run, a `destroy`): the
  behaviours that take it there;
- the users that must pause: when what runs on a provider empties the group of a provide port
  while a connected use port is in use (the user's bound places are marked), the user first
  runs the behaviours that leave those places, and once the provider is done, those that take
  it back. Transitively: a paused user may empty its own groups. A user whose connection
  changes pauses the same way, around the `disconnect` and `connect`. Nobody else waits.

Which behaviours take an instance from one marking to another is found by running them on the
instance alone (`madeus.reconfig.machine`, with its use ports left out), shortest sequence
first. The program is then verified and predicted like a hand-written one; nothing here
replaces the verifier.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from madeus import net
from madeus.errors import Diagnostic, MadeusError
from madeus.model import DEFAULT_BEHAVIOUR, ComponentType, Place, Serial, Value
from madeus.reconfig.machine import Machine
from madeus.reconfig.program import (
    Add,
    Connect,
    Disconnect,
    Instruction,
    Program,
    Push,
    Remove,
    Wait,
    WaitAll,
)
from madeus.reconfig.state import Configuration, InstanceState, final_places
from madeus.resolve import Deployment, Link, ResolvedInstance
from madeus.source import NO_SPAN, Span

if TYPE_CHECKING:
    from madeus.state import InstanceRecord, Record

SOURCE = "<apply>"
_DEPTH = 4  # behaviours in a row, at most, to go from one marking to another


@dataclass(frozen=True, slots=True)
class Synthesis:
    """`configuration`: where the program starts (the record, with today's parameters);
    `notes`: what the operator should know (a redeploy for want of `on change of`, an instance
    forgotten without uninstall)."""

    configuration: Configuration
    program: Program
    notes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(not isinstance(ins, WaitAll) for ins in self.program)


Marking = frozenset[str]


def synthesise(record: Record, deployment: Deployment, *, partial: bool = False) -> Synthesis:
    """The program from `record` (madeus.state.Record) to `deployment`. `partial` (`--limit`):
    `deployment` is a part of the whole; what it lacks is not removed."""
    return _Writer(record, deployment, partial).write()


def _key(link: Link) -> tuple[str, str, str, str]:
    return (link.user, link.user_port, link.provider, link.provider_port)


class _Writer:
    def __init__(self, record: Record, deployment: Deployment, partial: bool) -> None:
        from madeus.state import recorded_values

        self.partial = partial
        self._empties: dict[tuple[str, tuple[str, ...]], set[str]] = {}
        self.notes: list[str] = []
        self.components = {c.name: c for c in deployment.assembly.components}
        self.desired: dict[str, ResolvedInstance] = {i.name: i for i in deployment.instances}
        self.span = deployment.assembly.span
        inventory = deployment.inventory
        instances: list[InstanceState] = []
        self.was: dict[str, InstanceRecord] = {}
        for old in record.instances:
            self.was[old.name] = old
            want = self.desired.get(old.name)
            component = self.components.get(old.type)
            if component is None:  # the type left the files: nothing of it can run
                places = tuple(Place(p) for p in old.places)
                component = ComponentType(old.type, places=places)
            known = {p.name for p in component.places}
            marking = frozenset(p for p in old.places if p in known)
            if want is not None and want.component is component:
                params: Mapping[str, Value] = want.params
                span = want.span
            else:
                params = recorded_values(old.params)
                span = NO_SPAN
            serial = want.serial if want is not None else None  # how the files change it
            batches = tuple(frozenset(p for p in b if p in known) for b in old.batches)
            instances.append(
                InstanceState(
                    old.name,
                    component,
                    tuple(old.hosts),
                    marking,
                    params,
                    span=span,
                    serial=serial,
                    batches=batches,
                    recorded=old.params,
                )
            )
        present = {i.name for i in instances}
        spans = {_key(lk): lk.span for lk in net.links(net.compile(deployment))}
        self.wanted_links = {k for k in spans if k[0] in self.desired and k[2] in self.desired}
        links = tuple(
            Link(
                c.user,
                c.use,
                c.provider,
                c.provide,
                spans.get((c.user, c.use, c.provider, c.provide), NO_SPAN),
            )
            for c in record.connections
            if c.user in present and c.provider in present
        )
        self.spans = spans
        self.configuration = Configuration(
            deployment.name,
            tuple(instances),
            links,
            dict(record.data),
            self.components,
            inventory,
            "journal",
            deployment,
        )
        self.current: dict[str, InstanceState] = {i.name: i for i in instances}
        self.reachable = set(inventory.hosts) if not inventory.local else None

    # --- what happens to each instance ------------------------------------------------------

    def write(self) -> Synthesis:
        added: list[str] = []
        removed: list[str] = []  # uninstalled (when it can be), then removed
        errors: list[Diagnostic] = []
        runs: dict[str, tuple[str, ...]] = {}  # behaviours pushed on a kept instance
        completing: list[str] = []  # of them, those going back to their deployed places
        for name, want in self.desired.items():
            inst = self.current.get(name)
            if inst is None:
                added.append(name)
                continue
            if inst.component is not want.component or inst.hosts != want.hosts:
                # A program cannot remove a name and add it again (the verifier's events are
                # per name): moving an instance is two changes, or a redeploy.
                what = (
                    f"its type changed ({inst.type} -> {want.component.name})"
                    if inst.component is not want.component
                    else f"its hosts changed ({', '.join(inst.hosts)} -> {', '.join(want.hosts)})"
                )
                errors.append(
                    Diagnostic(
                        "apply-move",
                        f'"{name}": {what}: apply cannot move or retype a deployed instance; '
                        "give the new one another name (the old one is then removed), or "
                        "`madeus deploy --redeploy`",
                        want.span,
                    )
                )
                continue
            changed = self._changed_params(name, want)
            final = final_places(want.component)
            if changed and inst.marking != final:
                # A change that a cut-off run left half done (its parameters stay those of
                # record until it ends): it comes back with the others, providers first.
                completing.append(name)
            if changed:
                declared = want.component.behaviours_on_change(changed)
                if declared is not None:
                    runs[name] = declared
                    continue
                back = _path(
                    inst.component, inst.marking, _is(frozenset(inst.component.initial_places))
                )
                words = ", ".join(changed)
                if back is None:
                    errors.append(
                        Diagnostic(
                            "apply-change",
                            f'"{name}": {words} changed, and {want.component.name} declares no '
                            "`on change of` for it nor has a way back to its initial places to "
                            f"redeploy: declare `on change of {changed[0]}: ...` in the type",
                            want.span,
                        )
                    )
                    continue
                self.notes.append(
                    f"{name}: {words} changed and {want.component.name} declares no `on change "
                    f"of` for it: redeployed ({', '.join((*back, DEFAULT_BEHAVIOUR))})"
                )
                runs[name] = (*back, DEFAULT_BEHAVIOUR)
                continue
            if inst.marking != final:
                there = _path(inst.component, inst.marking, _is(final), first=DEFAULT_BEHAVIOUR)
                if there is None:
                    self.notes.append(
                        f"{name}: in {_places(inst.marking)}, and no behaviour takes it to its "
                        f"deployed places ({_places(final)}): left as it is"
                    )
                else:
                    runs[name] = there
                    completing.append(name)
        if errors:
            raise MadeusError(errors)
        if not self.partial:
            removed = [n for n in self.current if n not in self.desired]
        for name in runs:
            batches = self.current[name].parts()
            if len(batches) > 1:
                shown = [" ".join(hosts) for _, hosts in batches[:3]]
                more = ", ..." if len(batches) > 3 else ""
                self.notes.append(
                    f"{name} changes in {len(batches)} batches, one after the other "
                    f"({self.current[name].serial}): {', then '.join(shown)}{more}"
                )
        return self._program(added, removed, runs, completing)

    def _changed_params(self, name: str, want: ResolvedInstance) -> list[str]:
        from madeus.state import recorded_params

        now = recorded_params(want)
        then = self.was[name].params
        return [k for k in sorted(set(now) | set(then)) if now.get(k) != then.get(k)]

    # --- the program --------------------------------------------------------------------------

    def _program(
        self,
        added: list[str],
        removed: list[str],
        runs: dict[str, tuple[str, ...]],
        completing: Collection[str] = (),
    ) -> Synthesis:
        out: list[Instruction] = []
        current = self.current
        # How each leaving instance goes back to its initial places (None: it cannot).
        leaving: dict[str, tuple[str, ...] | None] = {}
        for name in removed:
            inst = current[name]
            if self.reachable is not None and not set(inst.hosts) <= self.reachable:
                gone = ", ".join(h for h in inst.hosts if h not in self.reachable)
                self.notes.append(
                    f"{name}: host {gone} is no longer in the inventory: forgotten without "
                    "running anything (keep the host in the inventory, outside the groups, to "
                    "uninstall it)"
                )
                leaving[name] = None
                continue
            initial = frozenset(inst.component.initial_places)
            back = _path(inst.component, inst.marking, _is(initial))
            if back is None and inst.marking != initial:
                self.notes.append(
                    f"{name}: no behaviour takes it from {_places(inst.marking)} back to its "
                    f"initial places: removed without running anything"
                )
            leaving[name] = back or None
        # What each instance runs, to find the groups it empties and the users that pause.
        planned: dict[str, tuple[str, ...]] = dict(runs)
        planned.update({n: b for n, b in leaving.items() if b})
        old_links = {_key(lk) for lk in self.configuration.links}
        gone_links = [k for k in sorted(old_links) if k not in self.wanted_links]
        new_links = [k for k in sorted(self.wanted_links) if k not in old_links]
        leaving_names = set(removed)
        # Users that pause: (user -> (pause, return)); `later`: those whose return waits for a
        # connection to change or a provider to leave, not only for a provider's behaviours.
        pauses: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        later: set[str] = set()
        waited: dict[str, None] = {}  # providers whose behaviours the returns wait for
        rewired = {k[0] for k in (*gone_links, *new_links) if k[0] in current}
        todo = deque(planned)
        for user in sorted(rewired - leaving_names - set(added)):
            ports = {k[1] for k in (*gone_links, *new_links) if k[0] == user}
            if any(
                _uses(current[user].component, p, current[user].marking) for p in ports
            ) and self._pause(user, ports, pauses):
                later.add(user)
                todo.append(user)
        while todo:
            name = todo.popleft()
            behaviours = planned.get(name) or pauses.get(name, ((), ()))[0]
            inst = current[name]
            for port in self._emptied(inst, behaviours):
                for lk in self.configuration.links:
                    if lk.provider != name or lk.provider_port != port:
                        continue
                    user = lk.user
                    if user in leaving_names or user in pauses or user in planned:
                        continue
                    if not _uses(current[user].component, lk.user_port, current[user].marking):
                        continue
                    if not self._pause(user, {lk.user_port}, pauses):
                        continue
                    if name in leaving_names or name in later:
                        later.add(user)
                    else:
                        waited[name] = None
                    todo.append(user)
        # 1. New instances, their connections, their deployment.
        for name in added:
            out.append(self._add(name))
        fresh = set(added)
        for key in new_links:
            if key[0] in fresh:
                out.append(self._connect(key))
        # A new user of a provider whose group empties deploys once the provider is done:
        # otherwise it could come to use it first, and the provider would wait for it.
        emptied = {n: self._emptied(current[n], b) for n, b in planned.items()}
        deferred: dict[str, None] = {}
        for user, _, provider, provide in new_links:
            if user in fresh and provide in emptied.get(provider, ()):
                deferred[user] = None
                waited[provider] = None
        out += [Push(n, DEFAULT_BEHAVIOUR, self._span(n)) for n in added if n not in deferred]
        # 2. Users pause; instances leave, users before their providers: the safety rule
        # protects a use in progress, not the one a user's uninstall has yet to make (its
        # `remove` transition bound to the provider's port), so each wave waits for the one
        # before; 3. what changes on the others runs.
        out += [Push(u, b, self._span(u)) for u, (pause, _) in pauses.items() for b in pause]
        for wave in self._waves([n for n in removed if leaving.get(n)], users_first=True):
            for name in wave:
                out += [Push(name, b, self._span(name)) for b in leaving[name] or ()]
            out += [Wait(n, self._span(n)) for n in wave]
        for name, behaviours in planned.items():
            if name not in leaving_names and name not in completing:
                out += [Push(name, b, self._span(name)) for b in behaviours]
        # Instances a cut-off run left between places come back providers first.
        waves = self._waves([n for n in planned if n in completing], users_first=False)
        for k, wave in enumerate(waves):
            for name in wave:
                out += [Push(name, b, self._span(name)) for b in planned[name]]
            if k < len(waves) - 1:
                out += [Wait(n, self._span(n)) for n in wave]
        # 4. Once the providers are done, their paused users come back.
        out += [Wait(n, self._span(n)) for n in waited]
        out += [Push(n, DEFAULT_BEHAVIOUR, self._span(n)) for n in deferred]
        out += self._returns(pauses, exclude=later)
        # 5. Connections change, instances go, and the paused users return.
        out += [Wait(u, self._span(u)) for u in pauses if u in later]
        # An instance removed without running anything still uses its ports: it goes with its
        # connections (a disconnect would be a use port disconnected while in use).
        still = {n for n in removed if not leaving.get(n)}
        out += [Disconnect(*k, self._link_span(k)) for k in gone_links if k[0] not in still]
        out += [Remove(n, self._span(n)) for n in removed]
        out += [self._connect(k) for k in new_links if k[0] not in fresh]
        out += self._returns(pauses, exclude=set(pauses) - later)
        out.append(WaitAll(self.span))
        return Synthesis(self.configuration, Program(tuple(out), SOURCE), tuple(self.notes))

    def _waves(self, names: list[str], *, users_first: bool) -> list[list[str]]:
        """`names` in waves: an instance comes after every one of `names` that uses it
        (`users_first`: leaving instances) or that it uses (instances coming back to their
        deployed places). A cycle of uses, which the verifier would refuse anyway, ends in one
        last wave."""
        after: dict[str, set[str]] = {n: set() for n in names}
        for lk in self.configuration.links:
            if lk.provider in after and lk.user in after and lk.user != lk.provider:
                if users_first:
                    after[lk.provider].add(lk.user)
                else:
                    after[lk.user].add(lk.provider)
        waves: list[list[str]] = []
        done: set[str] = set()
        left = list(names)
        while left:
            wave = [n for n in left if after[n] <= done] or left
            waves.append(wave)
            done.update(wave)
            left = [n for n in left if n not in done]
        return waves

    def _returns(
        self,
        pauses: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]],
        *,
        exclude: set[str],
    ) -> list[Instruction]:
        return [
            Push(u, b, self._span(u))
            for u, (_, back) in pauses.items()
            if u not in exclude
            for b in back
        ]

    def _pause(
        self,
        user: str,
        ports: Iterable[str],
        pauses: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
    ) -> bool:
        """Find how `user` leaves the places bound to `ports` and comes back; False (with a
        note) when it cannot: the verifier will then say what blocks."""
        inst = self.current[user]
        ports = set(ports)
        idle = _path(
            inst.component,
            inst.marking,
            lambda m: not any(_uses(inst.component, p, m) for p in ports),
        )
        if idle is None:
            self.notes.append(
                f"{user}: must pause while {', '.join(sorted(ports))} is not provided, but no "
                f"behaviour takes it out of {_places(inst.marking)}"
            )
            return False
        end = _alone(inst.component, inst.marking, idle)[0]
        assert end is not None
        back = _path(inst.component, end, _is(inst.marking), first=DEFAULT_BEHAVIOUR)
        if back is None:
            self.notes.append(
                f"{user}: pauses ({', '.join(idle)}) but no behaviour takes it back to "
                f"{_places(inst.marking)}"
            )
            back = ()
        pauses[user] = (idle, back)
        self.notes.append(
            f"{user} pauses ({', '.join(idle)}, then {', '.join(back) or 'nothing'}): "
            f"{', '.join(sorted(ports))} in use"
        )
        return True

    def _emptied(self, inst: InstanceState, behaviours: tuple[str, ...]) -> set[str]:
        """The provide ports of `inst` whose group empties while `behaviours` run (each
        instance and sequence run alone once)."""
        key = (inst.name, behaviours)
        found = self._empties.get(key)
        if found is None:
            rolling = len(inst.parts()) > 1
            found = self._empties[key] = (
                _alone(inst.component, inst.marking, behaviours, rolling)[1]
                if behaviours
                else set()
            )
        return found

    def _add(self, name: str) -> Add:
        want = self.desired[name]
        declared = {p.name: p.default for p in want.component.params if p.default is not None}
        args = tuple((k, v) for k, v in want.params.items() if declared.get(k) != v)
        return Add(
            name,
            want.component.name,
            None,
            args,
            self._span(name),
            tuple(want.hosts),
            want.serial,
        )

    def _connect(self, key: tuple[str, str, str, str]) -> Connect:
        return Connect(*key, self._link_span(key))

    def _span(self, name: str) -> Span:
        want = self.desired.get(name)
        return want.span if want is not None else self.span

    def _link_span(self, key: tuple[str, str, str, str]) -> Span:
        return self.spans.get(key, self.span)


def _is(goal: Marking) -> Callable[[Marking], bool]:
    return lambda m: m == goal


def _places(marking: Iterable[str]) -> str:
    return ", ".join(sorted(marking)) or "no place"


def _uses(component: ComponentType, port: str, marking: Marking) -> bool:
    """Whether use port `port` is in use with the tokens in `marking` (a settled instance:
    nothing runs, so only the places bound to it count)."""
    use = component.use(port)
    return use is not None and not marking.isdisjoint(use.places)


def _alone(
    component: ComponentType, marking: Marking, behaviours: Iterable[str], rolling: bool = False
) -> tuple[Marking | None, set[str]]:
    """Run `behaviours` on one instance alone (its use ports left out: nothing to wait for):
    the marking it ends in (None if it loops or blocks), and the provide ports whose group was
    empty at some moment though active at the start. `rolling`: the instance changes batch by
    batch (two are enough to see whether one keeps a port active while the other changes)."""
    alone = replace(component, uses=())
    name = "_"
    hosts, serial = (("1", "2"), Serial(1)) if rolling else (("",), None)
    state = InstanceState(name, alone, hosts, marking, serial=serial)
    configuration = Configuration("", (state,), (), components={alone.name: alone})
    pushes: tuple[Instruction, ...] = tuple(Push(name, b) for b in behaviours)
    machine = Machine(configuration, Program((*pushes, WaitAll()), "<alone>"))
    ports = [p.name for p in component.provides if machine.active(name, p.name)]
    emptied: set[str] = set()
    while True:
        machine.advance()
        emptied.update(p for p in ports if not machine.active(name, p))
        if machine.fatal is not None:
            return None, emptied
        running = [(r, t) for r in machine.parts[name] for t in sorted(machine.runs[r].running)]
        if not running:
            break
        for r, t in running:
            machine.end(r, t)
            emptied.update(p for p in ports if not machine.active(name, p))
    if not machine.finished:
        return None, emptied
    return machine.marking_of(name), emptied


def _path(
    component: ComponentType,
    start: Marking,
    goal: Callable[[Marking], bool],
    first: str | None = None,
) -> tuple[str, ...] | None:
    """The shortest sequence of behaviours (at most `_DEPTH`) that takes `start` to a marking
    `goal` accepts, trying `first` before the others; () when `start` is already there."""
    if goal(start):
        return ()
    order = list(component.behaviours)
    if first in order:
        order.remove(first)
        order.insert(0, first)
    seen = {start}
    queue: deque[tuple[Marking, tuple[str, ...]]] = deque([(start, ())])
    while queue:
        marking, path = queue.popleft()
        if len(path) >= _DEPTH:
            continue
        for behaviour in order:
            end = _alone(component, marking, (behaviour,))[0]
            if end is None or end in seen:
                continue
            if goal(end):
                return (*path, behaviour)
            seen.add(end)
            queue.append((end, (*path, behaviour)))
    return None
