"""The dependency net of a deployment's `deploy` behaviour, compiled once: what the plan and the
verifier read instead of the deployment's instances and connections.

Per component type (`Shape`, shared by all its instances: generated assemblies have 10,000
instances of two types): the deploy transitions, the initial places, the transitions entering
each place, the use ports bound to each transition. Per instance: its shape and hosts. Per
connected use port: the provider instance and its provide port (`Net.provider`). The nodes
and waits of docs/semantics.md follow from them: a transition waits for its source place and
its bound use ports; a place for the transitions entering it; a use port for the provide port
it is connected to; a provide port for one of the places of its group.

`compile(deployment)` is linear in the size of the deployment. A connection to an instance or a
provide port that does not exist (the front end rules it out; a deployment built by hand may
not) is recorded in `Net.problems`, for the plan and the verifier to refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from madeus.errors import Diagnostic
from madeus.model import DEFAULT_BEHAVIOUR, ComponentType, ProvidePort, Transition
from madeus.resolve import Deployment


@dataclass(frozen=True, slots=True)
class Shape:
    component: ComponentType
    deploy: tuple[Transition, ...]
    initial: frozenset[str]
    entering: Mapping[str, tuple[str, ...]]  # place -> deploy transitions entering it
    bound: Mapping[str, tuple[str, ...]]  # transition -> use ports bound to it
    waited_uses: tuple[str, ...]  # use ports bound to some deploy transition


@dataclass(frozen=True, slots=True)
class NetInstance:
    name: str
    shape: Shape
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Provider:
    """What a connected use port waits for: `port` of `instance`, None when the connection
    names a provide port the provider does not have."""

    instance: NetInstance
    port: ProvidePort | None


@dataclass(frozen=True, slots=True)
class Net:
    name: str
    instances: tuple[NetInstance, ...]
    # (user instance, use port) -> its provider, for the use ports bound to a deploy transition.
    provider: Mapping[tuple[str, str], Provider] = field(compare=False)
    # What the net was compiled from: hosts, parameters and spans for those who report.
    deployment: Deployment = field(compare=False, repr=False)
    problems: tuple[Diagnostic, ...] = ()


def compile(deployment: Deployment) -> Net:
    shapes: dict[int, Shape] = {}
    instances: list[NetInstance] = []
    by_name: dict[str, NetInstance] = {}
    for inst in deployment.instances:
        # Keyed by identity: resolved instances share their ComponentType object, and hashing
        # a whole component by value would cost more than what it saves.
        shape = shapes.get(id(inst.component))
        if shape is None:
            shape = shapes[id(inst.component)] = _shape(inst.component)
        node = NetInstance(inst.name, shape, inst.hosts)
        instances.append(node)
        by_name[inst.name] = node
    provider: dict[tuple[str, str], Provider] = {}
    problems: list[Diagnostic] = []
    for user in instances:
        for use in user.shape.waited_uses:
            link = deployment.provider_of(user.name, use)
            if link is None:
                continue  # an optional port left unconnected
            found = by_name.get(link.provider)
            if found is None:
                problems.append(
                    Diagnostic("unknown-instance", f'unknown instance "{link.provider}"', link.span)
                )
                continue
            port = found.shape.component.provide(link.provider_port)
            if port is None:
                problems.append(
                    Diagnostic(
                        "unknown-port",
                        "connection names unknown provide port "
                        f'"{link.provider}.{link.provider_port}"',
                        link.span,
                    )
                )
            provider[(user.name, use)] = Provider(found, port)
    return Net(deployment.name, tuple(instances), provider, deployment, tuple(problems))


def _shape(component: ComponentType) -> Shape:
    deploy = component.transitions_of(DEFAULT_BEHAVIOUR)
    names = {t.name for t in deploy}
    entering: dict[str, list[str]] = {}
    for t in deploy:
        entering.setdefault(t.target, []).append(t.name)
    bound: dict[str, list[str]] = {}
    for use in component.uses:
        for name in dict.fromkeys(use.transitions):
            bound.setdefault(name, []).append(use.name)
    return Shape(
        component,
        deploy,
        frozenset(component.initial_places),
        {p: tuple(ts) for p, ts in entering.items()},
        {t: tuple(ports) for t, ports in bound.items()},
        tuple(u.name for u in component.uses if any(t in names for t in u.transitions)),
    )
