"""Resolve an assembly against an inventory: expand families, place instances on hosts, merge
parameter defaults, and index connections. The result, a `Deployment`, is what the net, the
plan, the verifier and the engine work on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from madeus.errors import Diagnostic, InventoryError, MadeusError, did_you_mean
from madeus.inventory import LOCAL_HOST, Inventory
from madeus.model import (
    Assembly,
    ComponentType,
    Connection,
    Family,
    Instance,
    InstanceRef,
    PortRef,
    Serial,
    Target,
    Value,
)
from madeus.source import NO_SPAN, Span


@dataclass(frozen=True, slots=True)
class ResolvedInstance:
    name: str
    component: ComponentType
    hosts: tuple[str, ...]
    params: Mapping[str, Value] = field(compare=False)
    span: Span = field(default=NO_SPAN, compare=False)
    serial: Serial | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Link:
    """A connection, by names: `user.port -> provider.port`."""

    user: str
    user_port: str
    provider: str
    provider_port: str
    span: Span = field(default=NO_SPAN, compare=False)


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    instances: tuple[ResolvedInstance, ...]
    links: tuple[Link, ...]
    inventory: Inventory = field(compare=False)
    assembly: Assembly = field(compare=False)
    # What resolving noticed without refusing (a family over sites with no sites...).
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False)
    # A part of a deployment (`limit`): the instances it runs on fewer hosts than the whole.
    # None: the whole deployment.
    narrowed: frozenset[str] | None = field(default=None, compare=False)
    _by_name: Mapping[str, ResolvedInstance] = field(default_factory=dict, compare=False)
    _provider: Mapping[tuple[str, str], Link] = field(default_factory=dict, compare=False)

    def instance(self, name: str) -> ResolvedInstance:
        return self._by_name[name]

    def provider_of(self, instance: str, use_port: str) -> Link | None:
        """The connection serving `instance.use_port`, if any."""
        return self._provider.get((instance, use_port))

    def users_of(self, instance: str, provide_port: str) -> tuple[Link, ...]:
        return tuple(
            link
            for link in self.links
            if link.provider == instance and link.provider_port == provide_port
        )


def resolve(assembly: Assembly, inventory: Inventory | None = None) -> Deployment:
    """Raise InventoryError (with every problem) when targets do not exist in the inventory."""
    inv = inventory if inventory is not None else Inventory.local_default()
    components = {c.name: c for c in assembly.components}
    problems: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    instances: list[ResolvedInstance] = []
    connections: list[Connection] = list(assembly.connections)
    for inst in assembly.instances:
        hosts = _place(inst.target, {}, inv, problems)
        instances.append(_resolve_instance(inst, inst.name, hosts, components, inv, problems))
    for family in assembly.families:
        if family.over == "sites" and not inv.sites:
            warnings.append(
                Diagnostic(
                    "no-sites",
                    f"the family over sites is empty: the inventory defines no sites (set "
                    f"madeus_sites in the variables of all){_in(inv)}",
                    family.span,
                    severity="warning",
                )
            )
        for key, scope in _family_keys(family, inv, problems):
            bound = {family.var: key}
            for inst in family.instances:
                name = _expand_ref(inst.ref, bound)
                hosts = _place(inst.target, scope, inv, problems)
                instances.append(_resolve_instance(inst, name, hosts, components, inv, problems))
            connections.extend(
                Connection(_expand_port(c.user, bound), _expand_port(c.provider, bound), c.span)
                for c in family.connections
            )
    problems.extend(_missing_members(connections, instances))
    if problems:
        raise InventoryError(problems)
    links = tuple(
        Link(str(c.user.instance), c.user.port, str(c.provider.instance), c.provider.port, c.span)
        for c in connections
    )
    return Deployment(
        name=assembly.name,
        instances=tuple(instances),
        warnings=tuple(warnings),
        links=links,
        inventory=inv,
        assembly=assembly,
        _by_name={i.name: i for i in instances},
        _provider={(link.user, link.user_port): link for link in links},
    )


def _resolve_instance(
    inst: Instance,
    name: str,
    hosts: tuple[str, ...],
    components: Mapping[str, ComponentType],
    inv: Inventory,
    problems: list[Diagnostic],
) -> ResolvedInstance:
    component = components[inst.type]
    params: dict[str, Value] = {
        p.name: p.default for p in component.params if p.default is not None
    }
    params.update(inst.args)
    # The operator's extra variables (`-e`) override parameters of the same name, as in
    # Ansible they override every other variable.
    for param in component.params:
        if param.name in inv.extra_vars:
            value = _as_param(inv.extra_vars[param.name], param.type)
            if value is None:
                problems.append(
                    Diagnostic(
                        "extra-var-type",
                        f"extra variable {param.name}={inv.extra_vars[param.name]!r} does not "
                        f'fit parameter "{param.name}" ({param.type}) of instance "{name}"',
                        inst.span,
                    )
                )
            else:
                params[param.name] = value
    return ResolvedInstance(name, component, hosts, params, inst.span, inst.serial)


def _as_param(value: object, kind: str) -> Value | None:
    """An extra variable as a parameter of type `kind` (key=value extra variables are
    strings); None when it cannot be one."""
    import json

    text = value if isinstance(value, str) else None
    if kind in ("str", "secret"):
        return text if text is not None else json.dumps(value, sort_keys=True)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        words = {"yes": True, "true": True, "on": True, "1": True}
        words.update({"no": False, "false": False, "off": False, "0": False})
        return words.get((text or str(value)).lower())
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        if kind == "int" and not isinstance(value, float):
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        return None
    return None


# A family scope: the loop variable bound to the hosts it stands for.
_Scope = Mapping[str, tuple[str, ...]]


def _family_keys(
    family: Family, inv: Inventory, problems: list[Diagnostic]
) -> list[tuple[str, _Scope]]:
    if family.over == "sites":
        return [(site, {family.var: hosts}) for site, hosts in inv.sites.items()]
    group = family.group or ""
    if not inv.has_target(group):
        problems.append(_unknown_target(group, family.span, inv))
        return []
    return [(host, {family.var: (host,)}) for host in inv.hosts_of(group)]


def _place(
    target: Target | None, scope: _Scope, inv: Inventory, problems: list[Diagnostic]
) -> tuple[str, ...]:
    if target is None:  # no `on`: the instance runs on the controller itself
        return (LOCAL_HOST,)
    if target.name is None or (target.name in scope and not target.pattern):
        key = target.site if target.name is None else target.name
        return scope.get(key or "", ())
    if target.pattern:
        hosts = inv.hosts_matching(target.name)
    elif inv.has_target(target.name):
        hosts = inv.hosts_of(target.name)
    else:
        problems.append(_unknown_target(target.name, target.span, inv))
        return ()
    if target.site is not None:
        # A loop variable (inside a family over sites), else a site of the inventory.
        site = scope.get(target.site, inv.sites.get(target.site))
        if site is None:
            known = ", ".join(inv.sites) or "none"
            problems.append(
                Diagnostic(
                    "unknown-site",
                    f'unknown site "{target.site}" (the sites of the inventory: {known})',
                    target.span,
                )
            )
            return ()
        allowed = set(site)
        hosts = tuple(h for h in hosts if h in allowed)
    if not hosts:
        what = f'pattern "{target.name}"' if target.pattern else f'target "{target.name}"'
        where = f" in site {target.site}" if target.site is not None else ""
        problems.append(
            Diagnostic(
                "empty-target",
                f"{what} has no hosts{where}{_in(inv)}: an instance must run somewhere",
                target.span,
            )
        )
    return hosts


def _in(inv: Inventory) -> str:
    return f" (inventory {inv.path})" if inv.path else ""


def _missing_members(
    connections: list[Connection], instances: list[ResolvedInstance]
) -> list[Diagnostic]:
    """A connection naming one family member by its key (`a[east]`) names a member the
    families expanded to, or it is an error."""
    names = {i.name for i in instances}
    problems: list[Diagnostic] = []
    for c in connections:
        for ref in (c.user.instance, c.provider.instance):
            name = str(ref)  # a family's connections come with their keys expanded
            if name in names or "[" not in name:
                continue
            base = name.split("[", 1)[0]
            members = sorted(n for n in names if n.startswith(f"{base}["))
            problems.append(
                Diagnostic(
                    "unknown-member",
                    f'no member "{name}" of family "{base}" (its members: '
                    f"{', '.join(members) or 'none'})",
                    ref.span if ref.span.known else c.span,
                )
            )
    return problems


def _unknown_target(name: str, span: Span, inv: Inventory) -> Diagnostic:
    where = f" in inventory {inv.path}" if inv.path else ""
    close = did_you_mean(name, [*inv.groups, *inv.hosts])
    return Diagnostic(
        "unknown-target", f'unknown target "{name}": no such group or host{where}{close}', span
    )


def _expand_ref(ref: InstanceRef, bound: Mapping[str, str]) -> str:
    if ref.index is None:
        return ref.name
    return f"{ref.name}[{bound.get(ref.index, ref.index)}]"


def _expand_port(port: PortRef, bound: Mapping[str, str]) -> PortRef:
    name = _expand_ref(port.instance, bound)
    return PortRef(InstanceRef(name, None, port.instance.span), port.port, port.span)


def limit_hosts(inventory: Inventory, pattern: str) -> tuple[str, ...]:
    """The hosts `--limit PATTERN` keeps, as Ansible matches the pattern; none is an error."""
    hosts = inventory.placement(pattern)
    if not hosts:
        raise MadeusError([Diagnostic("limit", f"--limit {pattern}: the pattern matches no host")])
    return hosts


@dataclass(frozen=True, slots=True)
class Limited:
    """What `limit` kept and left out."""

    deployment: Deployment
    left_out: tuple[str, ...]  # instances not needed by the limited hosts
    narrowed: Mapping[str, tuple[str, ...]]  # instance -> the hosts it no longer runs on


def limit(deployment: Deployment, hosts: Iterable[str]) -> Limited:
    """The deployment restricted to what `hosts` need, as `--limit` restricts a run: an
    instance with hosts among them runs on those alone; the providers it uses (and theirs)
    run as placed, since it cannot start without them (a provider that is also on the hosts
    too: its users elsewhere need it there); every other instance is left out."""
    allowed = set(hosts)
    targeted = {i.name for i in deployment.instances if allowed.intersection(i.hosts)}
    providers: set[str] = set()
    todo = list(targeted)
    while todo:
        name = todo.pop()
        for link in deployment.links:
            if link.user == name and link.provider not in providers:
                providers.add(link.provider)
                todo.append(link.provider)
    needed = targeted | providers
    targeted -= providers
    kept: list[ResolvedInstance] = []
    narrowed: dict[str, tuple[str, ...]] = {}
    for i in deployment.instances:
        if i.name not in needed:
            continue
        if i.name in targeted:
            mine = tuple(h for h in i.hosts if h in allowed)
            if mine != i.hosts:
                narrowed[i.name] = tuple(h for h in i.hosts if h not in allowed)
            i = replace(i, hosts=mine)
        kept.append(i)
    links = tuple(
        link for link in deployment.links if link.user in needed and link.provider in needed
    )
    limited = Deployment(
        name=deployment.name,
        instances=tuple(kept),
        links=links,
        inventory=deployment.inventory,
        assembly=deployment.assembly,
        warnings=deployment.warnings,
        narrowed=frozenset(narrowed),
        _by_name={i.name: i for i in kept},
        _provider={(link.user, link.user_port): link for link in links},
    )
    left_out = tuple(i.name for i in deployment.instances if i.name not in needed)
    return Limited(limited, left_out, narrowed)
