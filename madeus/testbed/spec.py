"""TESTBED.yml: parse and validate a testbed description into frozen dataclasses.

The format follows EnOS (`resources`, `network_constraints`) plus a `sites` grouping:

    resources: {control: 1, network: 1, compute: 2}
    network_constraints:
      default_delay: 25ms
      default_rate: 1gbit
      constraints:
        - {dst: compute, delay: 50ms, rate: 100mbit}
    sites:
      site1: [control, network]
      site2: [compute]

We walk PyYAML's node tree (not the loaded Python values) so every error can point at the line
and column of the offending key or value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from madeus.errors import Diagnostic, MadeusError
from madeus.source import NO_SPAN, Span

DEFAULT_SITE = "testbed"
# One /24 holds the bridge (.1) and hosts from .10 on: keep a margin below 254.
MAX_HOSTS = 200

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_DELAY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s)\s*$", re.IGNORECASE)
_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(bit|kbit|mbit|gbit|tbit)\s*$", re.IGNORECASE)
_DELAY_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
# tc's units: decimal multiples of bits per second ("bps" would mean bytes for tc: not accepted).
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}


# Where diagnostics that concern no line of a file say they come from.
TOOL = "madeus testbed"


def problem(code: str, message: str) -> Diagnostic:
    """A diagnostic about the machine or the testbed, not about a line of TESTBED.yml."""
    return Diagnostic(code, message, Span(TOOL, 0, 0, 0, 0))


class TestbedError(MadeusError):
    """The testbed description is wrong, or the testbed could not be built or torn down."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True, slots=True)
class Delay:
    """A one-way delay, as written (`25ms`) and in seconds."""

    seconds: float
    text: str


@dataclass(frozen=True, slots=True)
class Rate:
    """A bandwidth, as written (`100mbit`) and in bits per second."""

    bits_per_second: int
    text: str


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    count: int
    span: Span = NO_SPAN


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    groups: tuple[str, ...]
    span: Span = NO_SPAN


@dataclass(frozen=True, slots=True)
class Constraint:
    """An override of the default delay and/or rate for every host of group `dst`.

    `span` is where `dst` is written.
    """

    dst: str
    delay: Delay | None
    rate: Rate | None
    span: Span = NO_SPAN


@dataclass(frozen=True, slots=True)
class NetworkConstraints:
    default_delay: Delay | None = None
    default_rate: Rate | None = None
    constraints: tuple[Constraint, ...] = ()

    def as_given(self) -> dict[str, Any]:
        """The constraints as the user wrote them (for the inventory's `network_constraints`)."""
        out: dict[str, Any] = {}
        if self.default_delay is not None:
            out["default_delay"] = self.default_delay.text
        if self.default_rate is not None:
            out["default_rate"] = self.default_rate.text
        if self.constraints:
            items: list[dict[str, str]] = []
            for c in self.constraints:
                item = {"dst": c.dst}
                if c.delay is not None:
                    item["delay"] = c.delay.text
                if c.rate is not None:
                    item["rate"] = c.rate.text
                items.append(item)
            out["constraints"] = items
        return out


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One emulated host, with the constraints that apply to its link to the controller."""

    name: str
    group: str
    site: str
    delay: Delay | None
    rate: Rate | None


@dataclass(frozen=True, slots=True)
class TestbedSpec:
    __test__ = False  # not a pytest test class, despite the name

    groups: tuple[Group, ...]
    sites: tuple[Site, ...]
    network: NetworkConstraints
    path: str = "<api>"

    def site_of(self, group: str) -> str:
        for site in self.sites:
            if group in site.groups:
                return site.name
        raise KeyError(group)

    def hosts(self) -> tuple[HostSpec, ...]:
        """Every host, `<group>-<n>` with n from 1, in the order of `resources`."""
        overrides = {c.dst: c for c in self.network.constraints}
        out: list[HostSpec] = []
        for group in self.groups:
            override = overrides.get(group.name)
            delay = self.network.default_delay
            rate = self.network.default_rate
            if override is not None:
                delay = override.delay if override.delay is not None else delay
                rate = override.rate if override.rate is not None else rate
            site = self.site_of(group.name)
            for n in range(1, group.count + 1):
                out.append(HostSpec(f"{group.name}-{n}", group.name, site, delay, rate))
        return tuple(out)


def parse_delay(text: str) -> Delay:
    """`25ms`, `0.5s`, `800us` -> Delay; raises ValueError with a plain-words message."""
    m = _DELAY.match(text)
    if m is None:
        raise ValueError(f"bad delay {text!r}: write a number and a unit (us, ms, s), e.g. 25ms")
    return Delay(float(m.group(1)) * _DELAY_UNITS[m.group(2).lower()], text.strip())


def parse_rate(text: str) -> Rate:
    """`1gbit`, `100mbit`, `500kbit` -> Rate; raises ValueError with a plain-words message."""
    m = _RATE.match(text)
    if m is None:
        raise ValueError(
            f"bad rate {text!r}: write a number and a unit (bit, kbit, mbit, gbit), e.g. 100mbit"
        )
    bits = round(float(m.group(1)) * _RATE_UNITS[m.group(2).lower()])
    if bits < 8000:
        raise ValueError(f"rate {text!r} is too low: the minimum is 8kbit")
    return Rate(bits, text.strip())


def load_spec(path: str | Path) -> TestbedSpec:
    """Read and validate a TESTBED.yml file; raises TestbedError listing every problem."""
    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise TestbedError([problem("testbed-read", f"cannot read {p}: {e.strerror}")]) from e
    return load_spec_text(text, p)


def load_spec_text(text: str, path: str = "<string>") -> TestbedSpec:
    """Validate a testbed description given as text (`path` only labels diagnostics)."""
    return _Parser(path).parse(text)


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[Diagnostic] = []

    def span(self, node: yaml.Node) -> Span:
        s, e = node.start_mark, node.end_mark
        return Span(self.path, s.line + 1, s.column + 1, e.line + 1, e.column + 1)

    def error(self, node: yaml.Node | None, code: str, message: str) -> None:
        span = self.span(node) if node is not None else Span(self.path, 0, 0, 0, 0)
        self.errors.append(Diagnostic(code, message, span))

    def parse(self, text: str) -> TestbedSpec:
        try:
            root = yaml.compose(text)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
            message = f"invalid YAML: {e.problem or e.context or 'syntax error'}"
            raise TestbedError(
                [Diagnostic("testbed-yaml", message, Span(self.path, line, col, line, col + 1))]
            ) from e
        if root is None:
            raise TestbedError(
                [
                    Diagnostic(
                        "testbed-empty",
                        "empty testbed description: `resources` is required",
                        Span(self.path, 0, 0, 0, 0),
                    )
                ]
            )
        top = self.mapping(root, "the testbed description")
        groups: tuple[Group, ...] = ()
        network = NetworkConstraints()
        sites_node: yaml.Node | None = None
        resources_seen = False
        for key, knode, value in top:
            if key == "resources":
                resources_seen = True
                groups = self.resources(value)
            elif key == "network_constraints":
                network = self.network(value)
            elif key == "sites":
                sites_node = value
            else:
                self.error(
                    knode,
                    "testbed-unknown-key",
                    f"unknown key {key!r}: expected resources, network_constraints or sites",
                )
        if not resources_seen and isinstance(root, yaml.MappingNode):
            self.error(root, "testbed-no-resources", "missing `resources` (group: number of hosts)")
        known = {g.name for g in groups}
        sites = self.sites(sites_node, groups) if sites_node is not None else ()
        if sites_node is None and groups:
            sites = (Site(DEFAULT_SITE, tuple(g.name for g in groups)),)
        for c in network.constraints:
            if c.dst not in known:
                self.error_at(
                    c.span, "testbed-unknown-group", f"constraint for unknown group {c.dst!r}"
                )
        total = sum(g.count for g in groups)
        if total > MAX_HOSTS:
            self.error(
                root,
                "testbed-too-many-hosts",
                f"{total} hosts: a local testbed holds at most {MAX_HOSTS}",
            )
        if self.errors:
            raise TestbedError(sorted(self.errors, key=lambda d: (d.span.line, d.span.col)))
        return TestbedSpec(groups, sites, network, self.path)

    def error_at(self, span: Span, code: str, message: str) -> None:
        self.errors.append(Diagnostic(code, message, span))

    def mapping(self, node: yaml.Node, what: str) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """The (key, key node, value node) of a mapping; reports a non-mapping or a bad key."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, "testbed-type", f"{what} must be a mapping")
            return iter(())
        return self._pairs(node.value)

    def _pairs(
        self, pairs: list[tuple[yaml.Node, yaml.Node]]
    ) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        seen: dict[str, yaml.Node] = {}
        for knode, vnode in pairs:
            if not isinstance(knode, yaml.ScalarNode):
                self.error(knode, "testbed-type", "keys must be plain names")
                continue
            key = str(knode.value)
            if key in seen:
                self.error(
                    knode,
                    "testbed-duplicate-key",
                    f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                )
                continue
            seen[key] = knode
            yield key, knode, vnode

    def scalar(self, node: yaml.Node, what: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, "testbed-type", f"{what} must be a single value")
            return None
        return str(node.value)

    def resources(self, node: yaml.Node) -> tuple[Group, ...]:
        groups: list[Group] = []
        for name, knode, vnode in self.mapping(node, "`resources`"):
            if not _NAME.match(name):
                self.error(
                    knode,
                    "testbed-bad-name",
                    f"bad group name {name!r}: use letters, digits and _, starting with a letter",
                )
                continue
            raw = self.scalar(vnode, f"the number of hosts of {name!r}")
            if raw is None:
                continue
            if not raw.isdigit() or int(raw) < 1:
                self.error(
                    vnode,
                    "testbed-bad-count",
                    f"the number of hosts of {name!r} must be a whole number >= 1, not {raw!r}",
                )
                continue
            groups.append(Group(name, int(raw), self.span(knode)))
        if not groups and isinstance(node, yaml.MappingNode) and not node.value:
            self.error(node, "testbed-no-resources", "`resources` lists no group")
        return tuple(groups)

    def delay(self, node: yaml.Node, what: str) -> Delay | None:
        raw = self.scalar(node, what)
        if raw is None:
            return None
        try:
            return parse_delay(raw)
        except ValueError as e:
            self.error(node, "testbed-bad-delay", f"{what}: {e}")
            return None

    def rate(self, node: yaml.Node, what: str) -> Rate | None:
        raw = self.scalar(node, what)
        if raw is None:
            return None
        try:
            return parse_rate(raw)
        except ValueError as e:
            self.error(node, "testbed-bad-rate", f"{what}: {e}")
            return None

    def loss(self, node: yaml.Node) -> None:
        raw = self.scalar(node, "loss")
        if raw is not None and raw.strip().rstrip("%").strip() not in ("0", "0.0"):
            self.error(
                node,
                "testbed-unsupported",
                "loss is not emulated by the local testbed (only delay and rate)",
            )

    def network(self, node: yaml.Node) -> NetworkConstraints:
        default_delay: Delay | None = None
        default_rate: Rate | None = None
        constraints: list[Constraint] = []
        for key, knode, vnode in self.mapping(node, "`network_constraints`"):
            if key == "default_delay":
                default_delay = self.delay(vnode, "default_delay")
            elif key == "default_rate":
                default_rate = self.rate(vnode, "default_rate")
            elif key == "default_loss":
                self.loss(vnode)
            elif key == "enable":
                pass  # EnOS' on/off switch: the testbed always applies the constraints
            elif key == "constraints":
                constraints = self.constraint_list(vnode)
            else:
                self.error(
                    knode,
                    "testbed-unknown-key",
                    f"unknown key {key!r} in network_constraints: expected "
                    "default_delay, default_rate or constraints",
                )
        seen: dict[str, Constraint] = {}
        for c in constraints:
            if c.dst in seen:
                self.error_at(
                    c.span,
                    "testbed-duplicate-constraint",
                    f"a second constraint for group {c.dst!r} "
                    f"(first at line {seen[c.dst].span.line})",
                )
            seen[c.dst] = c
        return NetworkConstraints(default_delay, default_rate, tuple(constraints))

    def constraint_list(self, node: yaml.Node) -> list[Constraint]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "testbed-type", "`constraints` must be a list")
            return []
        out: list[Constraint] = []
        for item in node.value:
            dst: str | None = None
            dst_node: yaml.Node = item
            delay: Delay | None = None
            rate: Rate | None = None
            ok = isinstance(item, yaml.MappingNode)
            for key, knode, vnode in self.mapping(item, "a constraint"):
                if key == "dst":
                    dst, dst_node = self.scalar(vnode, "dst"), vnode
                elif key == "delay":
                    delay = self.delay(vnode, "delay")
                elif key == "rate":
                    rate = self.rate(vnode, "rate")
                elif key == "loss":
                    self.loss(vnode)
                elif key == "symmetric":
                    pass  # delay and rate always apply in both directions here
                elif key == "src":
                    self.error(
                        knode,
                        "testbed-unsupported",
                        "`src` is not supported: the local testbed constrains the link "
                        "between the controller and each host of `dst` (hosts talk "
                        "to each other without delay)",
                    )
                else:
                    self.error(
                        knode,
                        "testbed-unknown-key",
                        f"unknown key {key!r} in a constraint: expected dst, delay, rate",
                    )
            if ok and dst is None:
                self.error(item, "testbed-no-dst", "a constraint needs `dst` (a group name)")
            if dst is not None:
                out.append(Constraint(dst, delay, rate, self.span(dst_node)))
        return out

    def sites(self, node: yaml.Node, groups: tuple[Group, ...]) -> tuple[Site, ...]:
        known = {g.name for g in groups}
        placed: dict[str, str] = {}
        out: list[Site] = []
        for name, knode, vnode in self.mapping(node, "`sites`"):
            if not _NAME.match(name):
                self.error(knode, "testbed-bad-name", f"bad site name {name!r}")
                continue
            members: list[str] = []
            items = vnode.value if isinstance(vnode, yaml.SequenceNode) else None
            if items is None:
                self.error(
                    vnode,
                    "testbed-type",
                    f"site {name!r} must list groups, e.g. [control, network]",
                )
                continue
            for gnode in items:
                g = self.scalar(gnode, "a group name")
                if g is None:
                    continue
                if g not in known:
                    self.error(
                        gnode, "testbed-unknown-group", f"site {name!r} lists unknown group {g!r}"
                    )
                elif g in placed:
                    self.error(
                        gnode,
                        "testbed-group-in-two-sites",
                        f"group {g!r} is already in site {placed[g]!r}",
                    )
                else:
                    placed[g] = name
                    members.append(g)
            out.append(Site(name, tuple(members), self.span(knode)))
        for group in groups:
            if group.name not in placed and isinstance(node, yaml.MappingNode):
                self.error_at(
                    group.span, "testbed-group-without-site", f"group {group.name!r} is in no site"
                )
        return tuple(out)
