"""The verifier: proves, before anything runs, that a deployment terminates and never uses a
service that is not provided (docs/semantics.md), or shows a counterexample at its source lines.

    from madeus.verify import verify
    for diagnostic in verify(deployment):      # [] when sound
        print(diagnostic.render())

Modules, one per stage (docs/semantics.md explains each encoding and why it is exact):
- `graph.py`: the wait graph of the deploy behaviour (who waits for whom, AND/OR), its least
  fixpoint and its strongly connected components;
- `deploy.py`: termination, as precedence constraints for z3, decided per cyclic component;
- `safety.py`: port safety of use ports bound to places, as a z3 reachability query;
- `explain.py`: unsat cores and models turned into diagnostics (cycles of waits, interleavings);
- `oracle.py`: the explicit-state explorer of the Madeus rules the tests compare z3 with.

`verify` checks the deploy behaviour. Behaviours and reconfiguration programs (Concerto
rules) have a bounded encoding (docs/semantics.md, section 9; `behaviours.py`), a check of its
own beside `check_deploy` and `check_safety`, explained the same way.

z3 is imported only when a check needs it: `import madeus.verify` is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from madeus import net
from madeus.errors import Diagnostic
from madeus.memory import gc_paused
from madeus.model import Assembly, Module
from madeus.resolve import Deployment
from madeus.verify.deploy import DeployProblem, DeployVerdict, check_deploy
from madeus.verify.graph import WaitGraph, build_wait_graph
from madeus.verify.safety import SafetyVerdict, UnsafeUse, check_safety

__all__ = [
    "Analysis",
    "DeployProblem",
    "DeployVerdict",
    "ProgramVerdict",
    "SafetyVerdict",
    "UnsafeUse",
    "analyze",
    "check_program",
    "problem_elements",
    "verify",
    "verify_program",
]

Target = Deployment | Assembly | Module


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything the verifier found, as data; `diagnostics` renders it."""

    deployment: Deployment = field(repr=False)
    graph: WaitGraph = field(repr=False)
    deploy: DeployVerdict
    safety: SafetyVerdict

    @property
    def sound(self) -> bool:
        return self.deploy.sound and self.safety.safe

    @property
    def diagnostics(self) -> list[Diagnostic]:
        from madeus.verify.explain import Sources, deploy_diagnostics, safety_diagnostic, sort_key

        src = Sources(self.graph.net)
        found = deploy_diagnostics(self.deploy, src)
        found.extend(safety_diagnostic(u, src) for u in self.safety.unsafe)
        found.extend(hostless(self.deployment))
        # Source order (stable: problems found on the same line keep the order found).
        return sorted(found, key=sort_key)


def hostless(deployment: Deployment) -> list[Diagnostic]:
    """Instances placed on no host (only a deployment built by hand can have them: resolving
    refuses them): their transitions could never run, so they must never count as done."""
    return [
        Diagnostic(
            "no-host",
            f'instance "{i.name}" runs on no host: its transitions could never run',
            i.span,
        )
        for i in deployment.instances
        if not i.hosts
    ]


def _deployment(target: Target) -> Deployment:
    if isinstance(target, Deployment):
        return target
    from madeus.errors import VerifyError
    from madeus.resolve import resolve

    assembly = target.assembly if isinstance(target, Module) else target
    if assembly is None:
        raise VerifyError([Diagnostic("no-assembly", "nothing to verify: no assembly")])
    return resolve(assembly)


def analyze(target: Target) -> Analysis:
    """Verify the deploy behaviour of `target` (an Assembly or Module is resolved against the
    local inventory: hosts do not change the verdict). Raise VerifyError only when the model
    is ill-formed in a way the front end would have reported (an unknown port...)."""
    deployment = _deployment(target)
    with gc_paused():
        graph = build_wait_graph(net.compile(deployment))
        deploy = check_deploy(graph)
        safety = check_safety(graph, deploy.fired)
    return Analysis(deployment, graph, deploy, safety)


def verify(target: Target) -> list[Diagnostic]:
    """Every deadlock, never-starting transition and port-safety violation of `target`'s
    deployment, in the diagnostic format of docs/cli.md (`Diagnostic.render`); [] when sound."""
    return analyze(target).diagnostics


def problem_elements(target: Target) -> frozenset[str | tuple[str, str]]:
    """Net node ids (`madeus.net`) and (source, target) net edges of every problem found:
    the cycles of waits (docks included), the never-reached places and what waits on them, the
    place bindings used before their provider: what `madeus graph --highlight-problems` draws
    in red."""
    from madeus.verify.explain import dock_nodes, net_edges

    analysis = analyze(target)
    graph = analysis.graph
    elements: set[str | tuple[str, str]] = set()
    for problem in analysis.deploy.problems:
        ids = [graph.nodes[n].net_id for n in problem.nodes]
        edges = net_edges(graph, problem.nodes, closed=problem.kind == "deadlock")
        elements.update(ids)
        elements.update(edges)
        elements.update(dock_nodes(edges))
        if problem.kind == "unreachable-provider":
            # The provide port's places, none of which any deploy transition enters.
            port = graph.nodes[problem.nodes[-1]].net_id
            for m in graph.deps[problem.nodes[-1]]:
                never = graph.nodes[m].net_id
                elements.update({never, (never, port)})
    for unsafe in analysis.safety.unsafe:
        use = f"{unsafe.instance}:use:{unsafe.port}"
        place = f"{unsafe.instance}:place:{unsafe.place}"
        provide = f"{unsafe.link.provider}:provide:{unsafe.link.provider_port}"
        elements.update({use, place, provide, (use, place), (provide, use)})
        for p in unsafe.group:
            group_place = f"{unsafe.link.provider}:place:{p}"
            elements.update({group_place, (group_place, provide)})
    return frozenset(elements)


# Reconfiguration programs (behaviours.py), imported on first use: they bring madeus.reconfig
# with them, which `import madeus.verify` should not pay for.
if TYPE_CHECKING:
    from madeus.verify.behaviours import ProgramVerdict, check_program, verify_program

_BEHAVIOURS = frozenset({"ProgramVerdict", "check_program", "verify_program"})


def __getattr__(name: str) -> Any:
    if name in _BEHAVIOURS:
        from madeus.verify import behaviours

        return getattr(behaviours, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
