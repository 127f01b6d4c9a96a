"""Graphviz drawings of a deployment, written as DOT text by hand.

Views:
- `assembly`: instances as tables of their ports, connections between ports, instances grouped
  by host group (the instance's target) inside sites when the inventory defines sites;
- `net`: the dependency Petri net (`madeus.net`), one cluster per instance: places (initial
  ones doubled), docks (points), transitions (boxes: name and duration), ports; connections
  between clusters;
- `plan`: the transition-level DAG of the plan: `after` edges solid, alternatives dashed,
  the critical path in red with its predicted start and end times;
- `component:NAME`: one component type's lifecycle, its ports, one colour per behaviour.

The DOT text is built without the `graphviz` Python package (nothing to import, and the text
is stable for tests); `.svg` and `.png` are rendered by the `dot` program. Labels show names,
durations, hosts and non-secret parameter values only: a `secret` parameter shows as `****`.

`highlight` is a set of Petri-net node ids (`mariadb:transition:pull`, `keystone:use:db`...)
and `(src, dst)` pairs of Petri-net edges; each view draws in red what it shows of them (the
assembly view: the instance, port or connection; the plan view: the transition).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from madeus import net
from madeus.errors import Diagnostic, MadeusError
from madeus.model import (
    DEFAULT_BEHAVIOUR,
    ComponentType,
    EnvRef,
    Place,
    ProvidePort,
    Transition,
    UsePort,
    Value,
)
from madeus.resolve import Deployment, ResolvedInstance
from madeus.source import Span

if TYPE_CHECKING:
    from madeus.plan import Plan

VIEWS: Final = ("assembly", "net", "plan", "component:NAME")
FORMATS: Final = ("dot", "svg", "png")
Highlight = frozenset[str | tuple[str, str]]

NO_DOT_MESSAGE: Final = (
    "the `dot` program (graphviz) is not installed; write .dot instead or install graphviz"
)

# --- look -----------------------------------------------------------------------------------

FONT: Final = "Helvetica"
RED: Final = "#d62728"
GREY: Final = "#555555"
# Fill and line colours per behaviour: deploy first, then others in order of appearance.
_FILLS: Final = ("#dbe8f6", "#fde0c5", "#d9ead3", "#ead1dc", "#fff2cc", "#d9d2e9", "#d0e0e3")
_LINES: Final = ("#3a6ea5", "#c46210", "#38761d", "#a64d79", "#b08f00", "#674ea7", "#45818e")
_PROVIDE_FILL: Final = "#d9f2d9"
_USE_FILL: Final = "#fbe5d6"


def parse_view(text: str) -> str:
    """Validate a view name (`assembly`, `net`, `plan` or `component:NAME`)."""
    if text in ("assembly", "net", "plan"):
        return text
    if text.startswith("component:") and text.split(":", 1)[1]:
        return text
    raise ValueError(f"unknown view {text!r}: choose assembly, net, plan or component:NAME")


def draw(
    deployment: Deployment,
    view: str,
    out_path: str | Path,
    *,
    plan: Plan | None = None,
    highlight: Highlight = frozenset(),
) -> Path:
    """Write the view to `out_path`, its suffix choosing the format (.dot, .svg or .png).

    Raise MadeusError when the view or the format is unknown, the `dot` program is needed but
    missing or fails, or the file cannot be written."""
    out = Path(out_path)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise MadeusError(
            [
                Diagnostic(
                    "output-format",
                    "cannot draw to this file: the output must end in .svg, .png or .dot",
                    _file(out),
                )
            ]
        )
    dot_program = shutil.which("dot") if fmt != "dot" else None
    if fmt != "dot" and dot_program is None:
        # Checked before the drawing is computed: fail fast, the message says what to do.
        raise MadeusError([Diagnostic("no-graphviz", NO_DOT_MESSAGE, _file(out))])
    _output(out, fmt, dot_program, to_dot(deployment, view, plan=plan, highlight=highlight))
    return out


def draw_component(
    components: Sequence[ComponentType], name: str, out_path: str | Path, where: str
) -> Path:
    """Draw one component type of a library of them (a file with no assembly); `where` names
    the file in messages."""
    out = Path(out_path)
    fmt = out.suffix.lower().lstrip(".")
    dot_program = shutil.which("dot") if fmt != "dot" else None
    if fmt != "dot" and dot_program is None:
        raise MadeusError([Diagnostic("no-graphviz", NO_DOT_MESSAGE, _file(out))])
    _output(out, fmt, dot_program, component_dot(components, name, f"file {where}", where))
    return out


def _output(out: Path, fmt: str, dot_program: str | None, text: str) -> None:
    if dot_program is None:
        _write(out, text.encode())
    else:
        _write(out, _render(dot_program, text, fmt, out))


def _file(path: str | Path) -> Span:
    """A position-less span naming a file: diagnostics about a whole file (or about the
    assembly, when no place in it is to blame) render as `PATH: error: MESSAGE`."""
    return Span(str(path), 0, 0, 0, 0)


def to_dot(
    deployment: Deployment,
    view: str,
    *,
    plan: Plan | None = None,
    highlight: Highlight = frozenset(),
) -> str:
    """The DOT text of a view."""
    try:
        view = parse_view(view)
    except ValueError as error:
        raise MadeusError(
            [Diagnostic("unknown-view", str(error), _file(deployment.assembly.span.path))]
        ) from None
    if view == "assembly":
        return _assembly(net.compile(deployment), highlight)
    if view == "net":
        return _net(net.compile(deployment), highlight)
    if view == "plan":
        if plan is None:
            from madeus.plan import build_plan

            plan = build_plan(deployment)
        return _plan(deployment, plan, highlight)
    return component_dot(
        deployment.assembly.components,
        view.split(":", 1)[1],
        f"assembly {deployment.name}",
        deployment.assembly.span.path,
    )


def _write(out: Path, data: bytes) -> None:
    try:
        out.write_bytes(data)
    except OSError as error:
        raise MadeusError(
            [Diagnostic("output", f"cannot write: {error.strerror or error}", _file(out))]
        ) from None


def _render(program: str, text: str, fmt: str, out: Path) -> bytes:
    try:
        done = subprocess.run(
            [program, f"-T{fmt}"], input=text.encode(), capture_output=True, check=False
        )
    except OSError as error:
        raise MadeusError(
            [Diagnostic("no-graphviz", f"cannot run dot: {error}", _file(out))]
        ) from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        raise MadeusError([Diagnostic("graphviz", f"dot failed: {reason}", _file(out))])
    return done.stdout


# --- DOT text -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Html:
    """An HTML-like label: written between `<` and `>` instead of quotes."""

    text: str


AttrValue = str | float | int | bool | _Html


def _quote(text: str) -> str:
    # Backslashes first: DOT gives `\n`, `\l`, `\N`... meanings we never want from user text.
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _value(value: AttrValue) -> str:
    if isinstance(value, _Html):
        return f"<{value.text}>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _quote(f"{value:g}")
    return _quote(value)


def _attrs(attrs: Mapping[str, AttrValue | None]) -> str:
    inside = ", ".join(f"{k}={_value(v)}" for k, v in attrs.items() if v is not None)
    return f" [{inside}]" if inside else ""


def _esc(text: str) -> str:
    """Escape for HTML-like labels."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


class _Dot:
    """Accumulates DOT statements, with clusters as nested blocks."""

    def __init__(self, name: str, label: str, **graph: AttrValue) -> None:
        self._lines = [f"digraph {_quote(name)} {{"]
        self._depth = 1
        self._clusters = 0
        attrs: dict[str, AttrValue] = {
            "rankdir": "LR",
            "fontname": FONT,
            "fontsize": 11,
            "labelloc": "t",
            "labeljust": "l",
            "label": label,
            "nodesep": 0.18,
            "ranksep": 0.3,
            "newrank": True,
            "compound": True,
            "outputorder": "edgesfirst",
        }
        attrs.update(graph)
        self.set(**attrs)
        self.line(f"node{_attrs({'fontname': FONT, 'fontsize': 9})}")
        self.line(f"edge{_attrs({'fontname': FONT, 'fontsize': 8, 'arrowsize': 0.6})}")

    def line(self, text: str) -> None:
        self._lines.append("  " * self._depth + text)

    def set(self, **attrs: AttrValue | None) -> None:
        for key, value in attrs.items():
            if value is not None:
                self.line(f"{key}={_value(value)};")

    def node(self, node: str, **attrs: AttrValue | None) -> None:
        self.line(f"{_quote(node)}{_attrs(attrs)};")

    def edge(self, src: str, dst: str, **attrs: AttrValue | None) -> None:
        self.line(f"{_endpoint(src)} -> {_endpoint(dst)}{_attrs(attrs)};")

    @contextmanager
    def cluster(self, label: str, **attrs: AttrValue | None) -> Iterator[None]:
        self._clusters += 1
        self.line(f"subgraph cluster_{self._clusters} {{")
        self._depth += 1
        self.set(label=label, **attrs)
        yield
        self._depth -= 1
        self.line("}")

    def text(self) -> str:
        return "\n".join([*self._lines, "}", ""])


def _endpoint(node: str) -> str:
    """`node` or `node|port|compass` (a cell of an HTML table): `"node":"port":e`."""
    if "|" not in node:
        return _quote(node)
    name, port, compass = node.split("|")
    return f"{_quote(name)}:{_quote(port)}:{compass}"


def _hl(on: bool, **attrs: AttrValue | None) -> dict[str, AttrValue | None]:
    """`attrs`, overridden to red and thick when highlighted."""
    if on:
        attrs.update(color=RED, penwidth=2, fontcolor=RED)
    return attrs


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


# --- grouping by site and host group --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Where:
    site: str | None
    group: str


def _placement(deployment: Deployment) -> dict[str, _Where]:
    """Each instance's host group (the target it names; the hosts when it names none or a
    family variable) and its site (when the inventory has sites and all its hosts are in one)."""
    targets: dict[str, str] = {}
    for inst in deployment.assembly.instances:
        if inst.target is not None and inst.target.name is not None:
            targets[inst.name] = inst.target.name
    family_targets: dict[str, str | None] = {}
    for family in deployment.assembly.families:
        for inst in family.instances:
            name = inst.target.name if inst.target is not None else None
            family_targets[inst.ref.name] = None if name == family.var else name
    inventory = deployment.inventory
    sites = not inventory.local and bool(inventory.sites)
    out: dict[str, _Where] = {}
    for resolved in deployment.instances:
        base = resolved.name.split("[", 1)[0]
        group = targets.get(resolved.name) or family_targets.get(base) or _hosts(resolved)
        site = None
        if sites:
            found = {inventory.site_of(h) for h in resolved.hosts}
            site = found.pop() if len(found) == 1 else None
        out[resolved.name] = _Where(site, group)
    return out


def _hosts(inst: ResolvedInstance, limit: int = 3) -> str:
    hosts = list(inst.hosts)
    if len(hosts) > limit:
        return ", ".join(hosts[:limit]) + f", +{len(hosts) - limit}"
    return ", ".join(hosts)


def _grouped(
    deployment: Deployment,
) -> dict[str | None, dict[str, list[ResolvedInstance]]]:
    """site -> host group -> instances, in declaration order."""
    where = _placement(deployment)
    tree: dict[str | None, dict[str, list[ResolvedInstance]]] = {}
    for inst in deployment.instances:
        w = where[inst.name]
        tree.setdefault(w.site, {}).setdefault(w.group, []).append(inst)
    return tree


def _group_label(group: str, instances: list[ResolvedInstance]) -> str:
    hosts = _hosts(instances[0]) if instances else ""
    return group if hosts in ("", group) else f"{group} ({hosts})"


def _each_group(dot: _Dot, deployment: Deployment) -> Iterator[list[ResolvedInstance]]:
    """Open the site and host-group clusters one after the other and yield, inside each, the
    instances to draw there. The site level only appears when the inventory defines sites."""
    for site, groups in _grouped(deployment).items():
        with _maybe_cluster(dot, f"site {site}" if site else None, style="dashed", color=GREY):
            for group, instances in groups.items():
                with dot.cluster(
                    _group_label(group, instances),
                    style="rounded,filled",
                    fillcolor="#f7f7f7",
                    color="#bbbbbb",
                    fontsize=10,
                    # At the bottom: edges leave the group's nodes upwards and rightwards, and
                    # graphviz does not keep edge labels off a cluster label at the top.
                    labelloc="b",
                ):
                    yield instances


@contextmanager
def _maybe_cluster(dot: _Dot, label: str | None, **attrs: AttrValue | None) -> Iterator[None]:
    if label is None:
        yield
        return
    with dot.cluster(label, **attrs):
        yield


# --- the assembly view ----------------------------------------------------------------------


def _params(inst: ResolvedInstance, limit: int = 28) -> list[str]:
    secret = {p.name for p in inst.component.params if p.secret}
    out: list[str] = []
    for name, value in inst.params.items():
        shown = "****" if name in secret else _show(value)
        if len(shown) > limit:
            shown = shown[: limit - 1] + "…"
        out.append(f"{name} = {shown}")
    return out


def _show(value: Value) -> str:
    if isinstance(value, EnvRef):
        return f"env({value.name})"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)


def _instance_table(inst: ResolvedInstance, highlight: Highlight, on: bool) -> _Html:
    """An HTML table: the node has no outline of its own (shape=plain), so a highlighted
    instance shows through its cell borders and its title."""
    c = inst.component

    def cell(kind: str, port: str, text: str, fill: str, align: str) -> str:
        body = _esc(text)
        border = ""
        if f"{inst.name}:{kind}:{port}" in highlight:
            body = f'<FONT COLOR="{RED}"><B>{body}</B></FONT>'
            border = f' COLOR="{RED}"'
        return (
            f'<TD PORT="{kind}_{_esc(port)}" BGCOLOR="{fill}" ALIGN="{align}"{border}>{body}</TD>'
        )

    name = f"<B>{_esc(inst.name)}</B>"
    if on:
        name = f'<FONT COLOR="{RED}">{name}</FONT>'
    rows = [
        f'<TR><TD COLSPAN="2" BGCOLOR="{"#fde0dc" if on else "#dbe8f6"}">{name}'
        f' <FONT POINT-SIZE="8">{_esc(c.name)}</FONT></TD></TR>'
    ]
    for i in range(max(len(c.uses), len(c.provides))):
        left = (
            cell("use", c.uses[i].name, f"▸ {c.uses[i].name}", _USE_FILL, "LEFT")
            if i < len(c.uses)
            else '<TD BORDER="0"></TD>'
        )
        right = (
            cell("provide", c.provides[i].name, f"{c.provides[i].name} ▸", _PROVIDE_FILL, "RIGHT")
            if i < len(c.provides)
            else '<TD BORDER="0"></TD>'
        )
        rows.append(f"<TR>{left}{right}</TR>")
    params = _params(inst)
    if params:
        text = "<BR/>".join(_esc(p) for p in params)
        rows.append(
            f'<TR><TD COLSPAN="2" BORDER="0" ALIGN="LEFT"><FONT POINT-SIZE="7">{text}'
            "</FONT></TD></TR>"
        )
    colour = f' COLOR="{RED}"' if on else ""
    return _Html(
        f'<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="2"{colour}>'
        + "".join(rows)
        + "</TABLE>"
    )


def _assembly(compiled: net.Net, highlight: Highlight) -> str:
    deployment = compiled.deployment
    dot = _Dot(
        deployment.name,
        f"assembly {deployment.name}: {len(deployment.instances)} instances, "
        f"{len(compiled.provider)} connections",
        ranksep=0.6,
    )
    for instances in _each_group(dot, deployment):
        for inst in instances:
            on = inst.name in highlight or _touches(inst.name, highlight)
            dot.node(inst.name, shape="plain", label=_instance_table(inst, highlight, on))
    for (user, use), served in compiled.provider.items():
        provider, port = served.instance.name, served.port.name if served.port else "?"
        pair = (net.provide_id(provider, port), net.use_id(user, use))
        label = port if port == use else f"{port} → {use}"
        dot.edge(
            f"{provider}|provide_{port}|e",
            f"{user}|use_{use}|w",
            **_hl(pair in highlight, label=label, color=GREY, fontcolor=GREY),
        )
    return dot.text()


# --- the net view and the component view ----------------------------------------------------


def _behaviour_colours(components: Iterable[ComponentType]) -> dict[str, int]:
    order: dict[str, int] = {DEFAULT_BEHAVIOUR: 0}
    for c in components:
        for b in c.behaviours:
            order.setdefault(b, len(order) % len(_FILLS))
    return order


_EDGE_LOOK: Final[dict[str, dict[str, AttrValue]]] = {
    "provide": {"style": "dashed", "color": "#38761d"},
    "use": {"style": "dashed", "color": "#c46210"},
    "use-place": {"style": "dotted", "color": "#c46210", "arrowhead": "odot"},
    "connection": {"color": GREY, "penwidth": 1.2},
}


def _lifecycle(
    dot: _Dot,
    nodes: Sequence[net.Node],
    edges: Sequence[net.Edge],
    colours: Mapping[str, int],
    highlight: Highlight,
    *,
    multi: bool,
) -> None:
    """Nodes and edges of the net (`madeus.net`): places, transitions (with their docks when
    the net has them), ports, bindings and connections; `multi` when transitions of several
    behaviours are drawn, to name the behaviour of the others."""
    places: set[str] = set()
    for node in nodes:
        on = node.id in highlight
        element = node.element
        if isinstance(element, Place):
            places.add(node.id)
            dot.node(
                node.id,
                **_hl(
                    on,
                    shape="doublecircle" if element.initial else "circle",
                    label=element.name,
                    fontsize=8,
                    width=0.3,
                    margin=0.02,
                ),
            )
        elif isinstance(element, Transition):
            line = _LINES[colours.get(element.behaviour, 0)]
            if node.kind != "transition":  # a dock: part of its transition's arrow
                dot.node(node.id, **_hl(on, shape="point", width=0.06, color=line))
                continue
            label = element.name
            if element.duration is not None:
                label += f"\n{_seconds(element.duration)}"
            if multi and element.behaviour != DEFAULT_BEHAVIOUR:
                label += f"\n[{element.behaviour}]"
            dot.node(
                node.id,
                **_hl(
                    on,
                    shape="box",
                    style="rounded,filled",
                    fillcolor=_FILLS[colours.get(element.behaviour, 0)],
                    color=line,
                    label=label,
                    height=0.3,
                    margin="0.06,0.02",
                ),
            )
        else:
            provide = isinstance(element, ProvidePort)
            optional = isinstance(element, UsePort) and element.optional
            dot.node(
                node.id,
                **_hl(
                    on,
                    shape="rarrow" if provide else "larrow",
                    style="filled,dashed" if element.kind == "data" else "filled",
                    fillcolor=_PROVIDE_FILL if provide else _USE_FILL,
                    label=element.name + (" ?" if optional else ""),
                    fontsize=8,
                    height=0.25,
                    margin="0.04,0.01",
                ),
            )
    colour_of = {n.id: n.element.behaviour for n in nodes if isinstance(n.element, Transition)}
    for edge in edges:
        on = (edge.source, edge.target) in highlight
        if edge.kind == "flow":
            # The transition's colour; only the last hop shows an arrow head.
            behaviour = colour_of.get(edge.source) or colour_of.get(edge.target)
            dot.edge(
                edge.source,
                edge.target,
                **_hl(
                    on,
                    color=_LINES[colours.get(behaviour or DEFAULT_BEHAVIOUR, 0)],
                    arrowhead="normal" if edge.target in places else "none",
                ),
            )
        else:
            dot.edge(edge.source, edge.target, **_hl(on, **_EDGE_LOOK[edge.kind]))


def _net(compiled: net.Net, highlight: Highlight) -> str:
    transitions = sum(len(i.shape.component.transitions) for i in compiled.instances)
    dot = _Dot(
        compiled.name,
        f"net {compiled.name}: {len(compiled.instances)} instances, {transitions} transitions",
    )
    colours = _behaviour_colours(i.shape.component for i in compiled.instances)
    by_name = {i.name: i for i in compiled.instances}
    for instances in _each_group(dot, compiled.deployment):
        for inst in instances:
            component = by_name[inst.name].shape.component
            with dot.cluster(
                f"{inst.name} : {component.name}",
                style="rounded,filled",
                fillcolor="white",
                color=RED if _touches(inst.name, highlight) else "#888888",
                fontsize=9,
                labelloc="t",
            ):
                nodes, edges = net.lifecycle(inst.name, component)
                multi = len(component.behaviours) > 1
                _lifecycle(dot, nodes, edges, colours, highlight, multi=multi)
    _lifecycle(dot, [], net.connections(compiled), colours, highlight, multi=False)
    return dot.text()


def _touches(instance: str, highlight: Highlight) -> bool:
    """Whether a highlighted node belongs to the instance (edges are drawn red themselves)."""
    prefix = f"{instance}:"
    return any(isinstance(h, str) and h.startswith(prefix) for h in highlight)


def component_dot(components: Sequence[ComponentType], name: str, where: str, path: str) -> str:
    """The lifecycle of component type `name` among `components` (`where` and `path` say
    where they come from, for the message when it is not there)."""
    component = next((c for c in components if c.name == name), None)
    if component is None:
        known = ", ".join(sorted(c.name for c in components)) or "none"
        raise MadeusError(
            [
                Diagnostic(
                    "unknown-component",
                    f'no component type "{name}" in {where} (component types: {known})',
                    _file(path),
                )
            ]
        )
    colours = _behaviour_colours([component])
    behaviours = component.behaviours or (DEFAULT_BEHAVIOUR,)
    dot = _Dot(
        component.name,
        f"component {component.name}: {len(component.places)} places, "
        f"{len(component.transitions)} transitions, behaviours: {', '.join(behaviours)}",
        ranksep=0.35,
    )
    nodes, edges = net.lifecycle(component.name, component, docks=False)
    _lifecycle(dot, nodes, edges, colours, frozenset(), multi=len(component.behaviours) > 1)
    if len(behaviours) > 1:
        with dot.cluster("behaviours", style="dashed", color="#bbbbbb", fontsize=8):
            for b in behaviours:
                colour = colours[b]
                dot.node(
                    f"legend:{b}",
                    shape="box",
                    style="rounded,filled",
                    fillcolor=_FILLS[colour],
                    color=_LINES[colour],
                    label=b,
                    fontsize=8,
                    height=0.25,
                )
    return dot.text()


# --- the plan view --------------------------------------------------------------------------


def _plan(deployment: Deployment, plan: Plan, highlight: Highlight) -> str:
    critical = set(plan.critical_path)
    on_path = set(zip(plan.critical_path, plan.critical_path[1:], strict=False))
    sequential = sum(t.duration for t in plan.transitions)
    dot = _Dot(
        plan.assembly,
        f"plan {plan.assembly}: {len(plan.transitions)} transitions, predicted makespan "
        f"{_seconds(plan.predicted_makespan)} (sequential {_seconds(sequential)}); "
        "critical path in red, dashed: any one of a group (all of one altN when numbered)",
        ranksep=0.35,
    )
    by_instance: dict[str, list[str]] = {}
    for t in plan.transitions:
        by_instance.setdefault(t.instance, []).append(t.id)
    known = {i.name for i in deployment.instances}
    instance_of = {t.id: t for t in plan.transitions}
    # Clusters in the deployment's order; instances the plan has but the deployment lacks
    # (a plan read from JSON) come last.
    order = [i.name for i in deployment.instances if i.name in by_instance]
    order += [name for name in by_instance if name not in known]
    for instance in order:
        with dot.cluster(instance, style="rounded", color="#999999", fontsize=9, margin=6):
            for tid in by_instance[instance]:
                t = instance_of[tid]
                on = tid in highlight or f"{t.instance}:transition:{t.name}" in highlight
                label = f"{t.name}\n{_seconds(t.duration)}"
                if tid in critical:
                    start = plan.start.get(tid, 0.0)
                    label += f"\n{start:.1f} → {start + t.duration:.1f} s"
                dot.node(
                    tid,
                    **_hl(
                        on,
                        shape="box",
                        style="rounded,filled",
                        fillcolor="#fde0dc" if tid in critical else "#dbe8f6",
                        color=RED if tid in critical else "#3a6ea5",
                        penwidth=2 if tid in critical else None,
                        fontcolor=RED if tid in critical else None,
                        label=label,
                        height=0.3,
                        margin="0.06,0.02",
                    ),
                )
    for t in plan.transitions:
        for a in t.after:
            hot = (a, t.id) in on_path
            dot.edge(
                a,
                t.id,
                color=RED if hot else GREY,
                penwidth=2.5 if hot else None,
            )
        entries = t.alternatives()
        for g, entry in enumerate(entries):
            joint = any(len(alternative) > 1 for alternative in entry)
            for k, alternative in enumerate(entry):
                for a in alternative:
                    hot = (a, t.id) in on_path
                    parts = [f"any{g + 1}"] if len(entries) > 1 else []
                    parts += [f"alt{k + 1}"] if joint else []
                    label = " ".join(parts)
                    dot.edge(
                        a,
                        t.id,
                        style="dashed",
                        color=RED if hot else GREY,
                        penwidth=2.5 if hot else None,
                        label=label or None,
                    )
    return dot.text()
