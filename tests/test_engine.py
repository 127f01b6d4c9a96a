"""The executor: semantics (checked against the plan by the validator), limits and priorities,
failures, data ports, values, logs, and property-based runs of random assemblies."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madeus.engine import (
    DeployError,
    ParameterError,
    RunEnded,
    RunStarted,
    TransitionEnded,
    TransitionStarted,
    deploy,
    deploy_sync,
)
from madeus.engine.events import Event
from madeus.engine.validate import validate
from madeus.inventory import inventory_from_dict
from madeus.model import (
    Assembly,
    ComponentType,
    Connection,
    EnvRef,
    Instance,
    InstanceRef,
    OutputOf,
    Param,
    Place,
    PortRef,
    ProvidePort,
    PythonAction,
    ShellAction,
    Target,
    Transition,
    UsePort,
)
from madeus.plan import build_plan
from madeus.resolve import resolve
from madeus.source import Span
from madeus.trace import Trace

SCALE = 0.01  # simulated seconds per declared second


# --- building assemblies with the model API -----------------------------------------------


def component(
    name: str,
    places: Sequence[str],
    transitions: Sequence[Transition],
    provides: Sequence[ProvidePort] = (),
    uses: Sequence[UsePort] = (),
    params: Sequence[Param] = (),
    span: Span | None = None,
) -> ComponentType:
    return ComponentType(
        name,
        params=tuple(params),
        places=tuple(Place(p, i == 0) for i, p in enumerate(places)),
        transitions=tuple(transitions),
        provides=tuple(provides),
        uses=tuple(uses),
        **({"span": span} if span is not None else {}),
    )


def instance(
    ref: str, type_: str, on: str | None = None, args: dict[str, str] | None = None
) -> Instance:
    target = Target(on) if on is not None else None
    return Instance(InstanceRef(ref), type_, target, tuple((args or {}).items()))


def connect(user: str, port: str, provider: str, provider_port: str | None = None) -> Connection:
    return Connection(
        PortRef(InstanceRef(user), port), PortRef(InstanceRef(provider), provider_port or port)
    )


def sim(assembly: Assembly, **options: object) -> tuple[Trace, list[Event]]:
    events: list[Event] = []
    result = deploy_sync(
        assembly, simulate=True, time_scale=SCALE, on_event=events.append, **options
    )
    return result.trace, events


def check(assembly: Assembly, trace: Trace, **limits: object) -> None:
    plan = build_plan(resolve(assembly, limits.pop("inventory", None)))  # type: ignore[arg-type]
    assert validate(trace, plan, **limits) == []  # type: ignore[arg-type]


def t(name: str, source: str, target: str, duration: float = 0.0, **kw: object) -> Transition:
    return Transition(name, source, target, duration=duration, **kw)  # type: ignore[arg-type]


# A database with parallel transitions and a service provided at its end; a web server
# whose `start` waits for it.
DB = component(
    "Db",
    ["initiated", "configured", "running"],
    [
        t("pull", "initiated", "configured", 3),
        t("config", "initiated", "configured", 1),
        t("start", "configured", "running", 2),
    ],
    provides=[ProvidePort("service", "service", ("running",))],
)
WEB = component(
    "Web",
    ["initiated", "installed", "running"],
    [t("install", "initiated", "installed", 1), t("start", "installed", "running", 1)],
    uses=[UsePort("db", "service", ("start",))],
)
SMALL = Assembly(
    "small",
    (DB, WEB),
    (instance("db", "Db"), instance("web", "Web")),
    (connect("web", "db", "db", "service"),),
)


def starts(trace: Trace) -> dict[str, float]:
    return {e.id: e.start for e in trace.events}


# --- semantics ------------------------------------------------------------------------------


def test_small_assembly_follows_the_plan() -> None:
    trace, _ = sim(SMALL)
    check(SMALL, trace)
    assert sorted(e.id for e in trace.events) == [
        "db.config",
        "db.pull",
        "db.start",
        "web.install",
        "web.start",
    ]
    assert all(e.status == "ok" and e.attempts == 1 for e in trace.events)
    s = starts(trace)
    # Parallel transitions start together; web.start waits for db.start's end (5 s).
    assert abs(s["db.pull"] - s["db.config"]) < 0.005
    # Timers may fire late on a busy machine, never early: lower bounds are exact.
    assert 5 * SCALE <= s["web.start"] < 5 * SCALE + 0.05
    assert 6 * SCALE <= trace.makespan < 6 * SCALE + 0.05
    assert trace.assembly == "small"
    assert trace.started_at.endswith("Z")


def test_events_bracket_the_run() -> None:
    _, events = sim(SMALL)
    assert isinstance(events[0], RunStarted)
    assert events[0].transitions == 5
    assert events[0].jobs == 5
    assert events[0].predicted_makespan == pytest.approx(6 * SCALE)
    assert isinstance(events[-1], RunEnded)
    assert events[-1].status == "ok"
    started = [e for e in events if isinstance(e, TransitionStarted)]
    ended = [e for e in events if isinstance(e, TransitionEnded)]
    assert len(started) == len(ended) == 5
    for event in ended:
        assert event.status == "ok" and event.final


def test_provide_group_of_several_places_waits_for_the_first() -> None:
    # The service is provided at `fast` or `slow`: whichever is reached first (after_any).
    prov = component(
        "Prov",
        ["init", "fast", "slow"],
        [t("quick", "init", "fast", 1), t("long", "init", "slow", 30)],
        provides=[ProvidePort("svc", "service", ("fast", "slow"))],
    )
    user = component(
        "User", ["a", "b"], [t("go", "a", "b", 1)], uses=[UsePort("svc", "service", ("go",))]
    )
    assembly = Assembly(
        "anyof",
        (prov, user),
        (instance("p", "Prov"), instance("u", "User")),
        (connect("u", "svc", "p"),),
    )
    trace, _ = sim(assembly)
    check(assembly, trace)
    assert 1 * SCALE <= starts(trace)["u.go"] < 15 * SCALE


def test_a_place_of_a_group_counts_once_every_transition_entering_it_has_ended() -> None:
    # `both` is reached when `a1` (2) and `a2` (8) have ended, `one` when `b` (5) has: the
    # service is provided at 5, neither at 2 (a1 alone) nor at 8.
    prov = component(
        "Prov",
        ["init", "both", "one"],
        [t("a1", "init", "both", 2), t("a2", "init", "both", 8), t("b", "init", "one", 5)],
        provides=[ProvidePort("svc", "service", ("both", "one"))],
    )
    user = component(
        "User", ["a", "b"], [t("go", "a", "b", 1)], uses=[UsePort("svc", "service", ("go",))]
    )
    assembly = Assembly(
        "oneof",
        (prov, user),
        (instance("p", "Prov"), instance("u", "User")),
        (connect("u", "svc", "p"),),
    )
    trace, _ = sim(assembly)
    check(assembly, trace)
    assert 5 * SCALE <= starts(trace)["u.go"] < 7 * SCALE


def test_zero_duration_chain_runs_without_tasks_and_validates() -> None:
    n = 2000
    chain = component(
        "Chain",
        [f"p{i}" for i in range(n + 1)],
        [t(f"t{i}", f"p{i}", f"p{i + 1}") for i in range(n)],
    )
    assembly = Assembly("chain", (chain,), (instance("c", "Chain"),))
    result = deploy_sync(assembly, simulate=True)
    assert len(result.trace.events) == n
    assert result.trace.makespan < 0.5
    assert validate(result.trace, result.plan) == []


INVENTORY = {
    "all": {
        "children": {
            "web": {
                "hosts": {
                    "w1": {"ansible_connection": "local", "rack": "r1"},
                    "w2": {"ansible_connection": "local", "rack": "r2"},
                    "w3": {"ansible_connection": "local", "rack": "r3"},
                },
                "vars": {"tier": "front"},
            },
            "db": {"hosts": {"d1": {"ansible_connection": "local"}}},
        }
    }
}


def test_instance_on_several_hosts_ends_when_all_hosts_end() -> None:
    inventory = inventory_from_dict(INVENTORY)
    assembly = Assembly(
        "multi",
        SMALL.components,
        (instance("db", "Db", "db"), instance("web", "Web", "web")),
        SMALL.connections,
    )
    trace, _ = sim(assembly, inventory=inventory)
    check(assembly, trace, inventory=inventory)
    hosts = sorted((e.id, e.host) for e in trace.events if e.id.startswith("web."))
    assert hosts == [(f"web.{n}", f"w{i}") for n in ("install", "start") for i in (1, 2, 3)]


async def _values_action(ctx: object) -> str:
    from madeus.backends.python import ActionContext

    assert isinstance(ctx, ActionContext)
    keys = (
        "host.name",
        "host.address",
        "host.vars.rack",
        "host.vars.tier",
        "greeting",
        "out",
        "count",
        "flag",
    )
    # The secret itself would be redacted from the output: report something derived.
    secret = {"password_reversed": ctx.values["password"][::-1]}
    return json.dumps({k: ctx.values.get(k) for k in keys} | secret | {"workdir": str(ctx.workdir)})


def test_values_data_ports_and_host_facts(tmp_path: Path) -> None:
    inventory = inventory_from_dict(INVENTORY)
    prov = component(
        "Prov",
        ["a", "b"],
        [t("make", "a", "b", action=ShellAction("echo '  made {name}  '"))],
        provides=[
            ProvidePort("greeting", "data", ("b",), value="hello {name} from {host.name}"),
            ProvidePort("out", "data", ("b",), value=OutputOf("make")),
        ],
        params=[Param("name", "str", "world")],
    )
    user = component(
        "User",
        ["a", "b"],
        [t("use", "a", "b", action=PythonAction(f"{__name__}:_values_action"))],
        uses=[UsePort("greeting", "data", ("use",)), UsePort("out", "data", ("use",))],
        params=[
            Param("count", "int", 3),
            Param("flag", "bool", True),
            Param("password", "secret", EnvRef("MADEUS_TEST_PW")),
        ],
        span=Span(str(tmp_path / "comp" / "user.mad"), 1, 1, 1, 2),
    )
    assembly = Assembly(
        "values",
        (prov, user),
        (instance("p", "Prov", "db", {"name": "madeus"}), instance("u", "User", "w2")),
        (connect("u", "greeting", "p"), connect("u", "out", "p")),
    )
    outputs: dict[str, str] = {}

    class Capture:
        """Wraps the default router to see each job's output."""

        def __init__(self) -> None:
            from madeus.backends.router import BackendConfig, Router

            self.router = Router(BackendConfig(inventory))

        async def run(self, job: object) -> object:
            outcome = await self.router.run(job)  # type: ignore[arg-type]
            outputs[job.id] = outcome.output  # type: ignore[attr-defined]
            return outcome

        async def aclose(self) -> None:
            await self.router.aclose()

    deploy_sync(
        assembly, inventory=inventory, backend=Capture(), environ={"MADEUS_TEST_PW": "pw-123"}
    )
    assert json.loads(outputs["u.use"]) == {
        "host.name": "w2",
        "host.address": "w2",
        "host.vars.rack": "r2",
        "host.vars.tier": "front",
        "greeting": "hello madeus from d1",
        "out": "made madeus",
        "count": "3",
        "flag": "true",
        "password_reversed": "321-wp",
        "workdir": str(tmp_path / "comp"),
    }


def test_unset_environment_variable_stops_before_anything_runs() -> None:
    comp = component(
        "C", ["a", "b"], [t("go", "a", "b")], params=[Param("token", "secret", EnvRef("NOPE"))]
    )
    assembly = Assembly("env", (comp,), (instance("api", "C"),))
    events: list[Event] = []
    with pytest.raises(ParameterError) as caught:
        deploy_sync(assembly, on_event=events.append, environ={})
    assert str(caught.value) == (
        'instance "api": parameter "token" reads environment variable "NOPE", which is not set'
    )
    assert events == []


@pytest.mark.parametrize(
    ("kind", "text", "words"),
    [
        ("int", "4.5", "an int"),
        ("float", "fast", "a float"),
        ("bool", "yes", "a bool (true or false)"),
    ],
)
def test_an_environment_value_must_read_as_its_declared_type(
    kind: str, text: str, words: str
) -> None:
    """Typed values reach Ansible as their type: one that cannot be read stops the run first."""
    comp = component("C", ["a", "b"], [t("go", "a", "b")], params=[Param("n", kind, EnvRef("N"))])
    assembly = Assembly("env", (comp,), (instance("api", "C"),))
    with pytest.raises(ParameterError) as caught:
        deploy_sync(assembly, environ={"N": text})
    assert str(caught.value) == (
        f'instance "api": parameter "n" is {words}, but environment variable "N" holds {text!r}'
    )


# --- failures ---------------------------------------------------------------------------


def _failing_assembly(tmp_path: Path, **fail_kw: object) -> Assembly:
    comp = component(
        "Svc",
        ["a", "b", "c"],
        [
            t(
                "bad",
                "a",
                "b",
                action=ShellAction("echo going; echo 'disk full' >&2; exit 4"),
                **fail_kw,
            ),
            t("slow", "a", "b", action=ShellAction(f"sleep 0.5; touch {tmp_path}/slow-done")),
            t("after", "b", "c", action=ShellAction(f"touch {tmp_path}/after-ran")),
        ],
    )
    return Assembly("failing", (comp,), (instance("svc", "Svc"),))


def test_failure_cancels_running_transitions(tmp_path: Path) -> None:
    events: list[Event] = []
    with pytest.raises(DeployError) as caught:
        deploy_sync(_failing_assembly(tmp_path), run_dir=tmp_path / "run", on_event=events.append)
    error = caught.value
    assert (error.transition, error.host, error.status) == ("svc.bad", "localhost", "failed")
    assert error.exit_status == 4
    assert error.stderr_tail == "disk full"
    assert str(error) == 'transition "svc.bad" failed on host "localhost" (exit status 4)'
    statuses = {e.id: e.status for e in error.trace.events}
    assert statuses == {"svc.bad": "failed", "svc.slow": "cancelled"}
    assert not (tmp_path / "slow-done").exists()
    assert not (tmp_path / "after-ran").exists()
    assert isinstance(events[-1], RunEnded) and events[-1].status == "failed"
    saved = json.loads((tmp_path / "run" / "trace.json").read_text())
    assert {e["id"]: e["status"] for e in saved["events"]} == statuses
    assert (tmp_path / "run" / "svc.bad@localhost.err").read_text() == "disk full\n"


def test_let_running_finish(tmp_path: Path) -> None:
    with pytest.raises(DeployError) as caught:
        deploy_sync(_failing_assembly(tmp_path), let_running_finish=True)
    statuses = {e.id: e.status for e in caught.value.trace.events}
    assert statuses == {"svc.bad": "failed", "svc.slow": "ok"}
    assert (tmp_path / "slow-done").exists()
    assert not (tmp_path / "after-ran").exists()


def test_retries_then_success(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    command = f"echo x >> {counter}; test $(wc -l < {counter}) -ge 3"
    comp = component(
        "C", ["a", "b"], [t("flaky", "a", "b", action=ShellAction(command), retries=2)]
    )
    events: list[Event] = []
    result = deploy_sync(Assembly("retry", (comp,), (instance("c", "C"),)), on_event=events.append)
    (event,) = result.trace.events
    assert (event.status, event.attempts) == ("ok", 3)
    ends = [(e.status, e.final) for e in events if isinstance(e, TransitionEnded)]
    assert ends == [("failed", False), ("failed", False), ("ok", True)]


def test_timeout_after_retries(tmp_path: Path) -> None:
    comp = component(
        "C",
        ["a", "b"],
        [t("hang", "a", "b", action=ShellAction("sleep 30"), timeout=0.2, retries=1)],
    )
    with pytest.raises(DeployError) as caught:
        deploy_sync(Assembly("hang", (comp,), (instance("c", "C"),)))
    error = caught.value
    assert error.status == "timeout"
    assert error.message == "timed out after 0.2 s"
    (event,) = error.trace.events
    assert (event.status, event.attempts) == ("timeout", 2)
    assert event.end - event.start < 2


def test_secrets_never_reach_trace_events_or_logs(tmp_path: Path) -> None:
    comp = component(
        "C",
        ["a", "b"],
        [t("leak", "a", "b", action=ShellAction("echo {pw}; echo {pw} >&2; exit 1"))],
        params=[Param("pw", "secret", EnvRef("PW"))],
    )
    events: list[Event] = []
    with pytest.raises(DeployError) as caught:
        deploy_sync(
            Assembly("secret", (comp,), (instance("c", "C"),)),
            environ={"PW": "correct-horse"},
            run_dir=tmp_path / "run",
            on_event=events.append,
        )
    everything = [repr(e) for e in events] + [str(caught.value), caught.value.stderr_tail]
    everything += [p.read_text() for p in (tmp_path / "run").iterdir()]
    assert all("correct-horse" not in text for text in everything)
    assert caught.value.stderr_tail == "******"


def test_run_directory_is_private(tmp_path: Path) -> None:
    comp = component("C", ["a", "b"], [t("say", "a", "b", action=ShellAction("echo hi"))])
    run_dir = tmp_path / "runs" / "r1"
    deploy_sync(Assembly("logs", (comp,), (instance("c", "C"),)), run_dir=run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "c.say@localhost.out",
        "plan.json",
        "trace.json",
    ]
    for path in (tmp_path / "runs", run_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in run_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (run_dir / "c.say@localhost.out").read_text() == "hi\n"


def test_new_run_ids_sort_by_time() -> None:
    from datetime import UTC, datetime

    from madeus.engine.runlog import new_run_id

    early = new_run_id(datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC))
    late = new_run_id(datetime(2026, 1, 2, 3, 4, 5, 7000, tzinfo=UTC))
    assert early.startswith("20260102T030405.006Z-")
    assert early < late


def test_cancelling_the_run_kills_processes_and_keeps_the_trace(tmp_path: Path) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    comp = component(
        "C",
        ["a", "b"],
        [
            t("wait", "a", "b", action=ShellAction(f"sleep 60 & echo $! > {fifo}; wait")),
        ],
    )
    events: list[Event] = []

    async def main() -> int:
        task = asyncio.create_task(
            deploy(
                Assembly("ctrl-c", (comp,), (instance("c", "C"),)),
                run_dir=tmp_path / "run",
                on_event=events.append,
            )
        )
        pid = int(await asyncio.to_thread(fifo.read_text))
        task.cancel()  # what asyncio.run does on Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    pid = asyncio.run(main())
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    ended = events[-1]
    assert isinstance(ended, RunEnded) and ended.status == "interrupted"
    assert [(e.id, e.status) for e in ended.trace.events] == [("c.wait", "cancelled")]
    assert (
        json.loads((tmp_path / "run" / "trace.json").read_text())["events"][0]["status"]
        == "cancelled"
    )


# --- limits and priorities -------------------------------------------------------------------


def _overlap(trace: Trace, host: str | None = None) -> int:
    """The most jobs running at once."""
    points = sorted(
        [(e.start, 1) for e in trace.events if host in (None, e.host) and e.end > e.start]
        + [(e.end, -1) for e in trace.events if host in (None, e.host) and e.end > e.start]
    )
    running = peak = 0
    for _, delta in points:  # ends sort before starts at the same time
        running += delta
        peak = max(peak, running)
    return peak


def _wide(n: int) -> Assembly:
    comp = component("One", ["a", "b"], [t("go", "a", "b", 1)])
    return Assembly("wide", (comp,), tuple(instance(f"c{i}", "One") for i in range(n)))


def test_max_parallel_is_respected() -> None:
    assembly = _wide(7)
    trace, _ = sim(assembly, max_parallel=3)
    assert _overlap(trace) == 3
    check(assembly, trace, max_parallel=3)
    # Without waiting needlessly: 7 one-second jobs, 3 at a time, take 3 seconds.
    assert 3 * SCALE <= trace.makespan < 3 * SCALE + 0.05


def test_host_limit_from_inventory() -> None:
    inventory = inventory_from_dict(
        {
            "all": {
                "children": {
                    "pool": {
                        "hosts": {
                            "h1": {"ansible_connection": "local", "madeus_max_parallel": 1},
                            "h2": {"ansible_connection": "local"},
                        },
                        "vars": {"madeus_max_parallel": 2},
                    }
                }
            }
        }
    )
    comp = component("One", ["a", "b"], [t("go", "a", "b", 1)])
    assembly = Assembly("pool", (comp,), tuple(instance(f"c{i}", "One", "pool") for i in range(4)))
    trace, _ = sim(assembly, inventory=inventory)
    assert _overlap(trace, "h1") == 1
    assert _overlap(trace, "h2") == 2
    check(assembly, trace, inventory=inventory, host_limits={"h1": 1, "h2": 2})


def _priority_assembly() -> Assembly:
    # Declared first, two short independent jobs; then a chain of two. With 2 slots, FIFO
    # runs the short ones first and the chain ends at 3; critical path first ends at 2.
    short = component("Short", ["a", "b"], [t("go", "a", "b", 1)])
    chain = component("Chain", ["a", "b", "c"], [t("one", "a", "b", 1), t("two", "b", "c", 1)])
    return Assembly(
        "prio",
        (short, chain),
        (instance("s1", "Short"), instance("s2", "Short"), instance("k", "Chain")),
    )


@pytest.mark.parametrize(("scheduling", "units"), [("critical-path", 2), ("fifo", 3)])
def test_critical_path_first_beats_fifo(scheduling: str, units: int) -> None:
    assembly = _priority_assembly()
    unit = 0.05  # a larger scale than SCALE: timer lag on a busy machine stays well below it
    result = deploy_sync(
        assembly, simulate=True, time_scale=unit, max_parallel=2, scheduling=scheduling
    )
    assert units * unit <= result.makespan < (units + 0.5) * unit
    assert validate(result.trace, result.plan, max_parallel=2) == []


# --- property: random assemblies validate ------------------------------------------------


@st.composite
def assemblies(draw: st.DrawFn) -> Assembly:
    """Random components (a few places, transitions forming a DAG with parallel branches),
    random provide groups, use ports connecting instances acyclically, small durations."""
    durations = st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0])
    n_instances = draw(st.integers(1, 5))
    components: list[ComponentType] = []
    instances: list[Instance] = []
    connections: list[Connection] = []
    provides_of: list[list[str]] = []
    for k in range(n_instances):
        n_places = draw(st.integers(2, 5))
        places = [f"p{i}" for i in range(n_places)]
        transitions: list[Transition] = []
        # Every place i > 0 is entered from some earlier place (reachable, acyclic);
        # sometimes by two parallel transitions.
        for i in range(1, n_places):
            for branch in range(draw(st.integers(1, 2))):
                src = draw(st.integers(0, i - 1))
                transitions.append(t(f"t{i}_{branch}", places[src], places[i], draw(durations)))
        provides: list[ProvidePort] = []
        for j in range(draw(st.integers(0, 2))):
            group = draw(st.sets(st.sampled_from(places[1:]), min_size=1, max_size=2))
            provides.append(ProvidePort(f"out{j}", "service", tuple(sorted(group))))
        uses: list[UsePort] = []
        # Use ports only towards earlier instances: connections stay acyclic.
        candidates = [(i, port) for i in range(k) for port in provides_of[i]]
        if candidates:
            for j, (provider, port) in enumerate(
                draw(st.lists(st.sampled_from(candidates), max_size=2, unique=True))
            ):
                bound = draw(
                    st.sets(st.sampled_from([x.name for x in transitions]), min_size=1, max_size=2)
                )
                uses.append(UsePort(f"in{j}", "service", tuple(sorted(bound))))
                connections.append(connect(f"i{k}", f"in{j}", f"i{provider}", port))
        components.append(component(f"C{k}", places, transitions, provides, uses))
        instances.append(instance(f"i{k}", f"C{k}"))
        provides_of.append([p.name for p in provides])
    return Assembly("random", tuple(components), tuple(instances), tuple(connections))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assemblies())
def test_random_assemblies_follow_the_semantics(assembly: Assembly) -> None:
    result = deploy_sync(assembly, simulate=True, time_scale=SCALE)
    assert validate(result.trace, result.plan) == []


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assemblies(), st.integers(1, 3))
def test_random_assemblies_under_a_limit(assembly: Assembly, limit: int) -> None:
    result = deploy_sync(assembly, simulate=True, time_scale=SCALE, max_parallel=limit)
    assert validate(result.trace, result.plan, max_parallel=limit) == []


def test_library_exports_are_lazy() -> None:
    code = (
        "import sys, madeus; heavy = [m for m in sys.modules if m.startswith('madeus.')]; "
        "assert heavy == [], heavy; assert madeus.deploy is madeus.engine.deploy; "
        "assert 'deploy_sync' in madeus.__all__"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_example_of_the_api_guide_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Path(__file__).resolve().parent.parent
    text = (repo / "docs" / "api.md").read_text(encoding="utf-8")
    section = text.split("## Deploying from Python", 1)[1].split("\n## ", 1)[0]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(example.replace('"assemblies/', f'"{repo}/assemblies/'), namespace)
    out = capsys.readouterr().out
    assert "ok        mariadb.pull @ control-1 (" in out
    assert Trace.from_json(json.loads((tmp_path / "trace.json").read_text())).ok


def test_a_data_value_that_cannot_be_rendered_fails_the_run() -> None:
    prov = component(
        "Prov",
        ["a", "b"],
        [t("make", "a", "b")],
        provides=[ProvidePort("url", "data", ("b",), value="http://{nowhere}/")],
    )
    user = component(
        "User", ["a", "b"], [t("use", "a", "b")], uses=[UsePort("url", "data", ("use",))]
    )
    assembly = Assembly(
        "bad-data",
        (prov, user),
        (instance("p", "Prov"), instance("u", "User")),
        (connect("u", "url", "p"),),
    )
    with pytest.raises(DeployError) as caught:
        deploy_sync(assembly)
    assert str(caught.value) == (
        'transition "p.make" failed on host "localhost": cannot compute a data port value: '
        'no value for placeholder "{nowhere}"'
    )
    assert [(e.id, e.status) for e in caught.value.trace.events] == [("p.make", "ok")]


# --- failure policies: keep going, backoff, injected failures ---------------------------------


def _two_chains() -> Assembly:
    """`left.a -> left.b` and `right.a -> right.b`, independent; right is slower."""
    comp = component("Two", ["p", "q", "r"], [t("a", "p", "q", 1), t("b", "q", "r", 1)])
    return Assembly("two", (comp,), (instance("left", "Two"), instance("right", "Two")))


def test_keep_going_runs_what_does_not_depend_on_a_failure() -> None:
    events: list[Event] = []
    with pytest.raises(DeployError) as caught:
        deploy_sync(
            _two_chains(),
            simulate=True,
            time_scale=SCALE,
            keep_going=True,
            inject_failures=["left.a"],
            on_event=events.append,
        )
    error = caught.value
    assert [f.transition for f in error.failures] == ["left.a"]
    statuses = {e.id: e.status for e in error.trace.events}
    assert statuses == {"left.a": "failed", "right.a": "ok", "right.b": "ok"}  # left.b waits
    assert isinstance(events[-1], RunEnded) and events[-1].status == "failed"


def test_keep_going_reports_every_failure() -> None:
    with pytest.raises(DeployError) as caught:
        sim(_two_chains(), keep_going=True, inject_failures=["left.a", "right.b"])
    assert [f.transition for f in caught.value.failures] == ["left.a", "right.b"]
    assert str(caught.value) == (
        'transition "left.a" failed on host "localhost": injected failure (--inject-failure '
        'left.a@localhost): the action did not run; transition "right.b" failed on host '
        '"localhost": injected failure (--inject-failure right.b@localhost): the action did '
        "not run"
    )


def test_without_keep_going_a_failure_stops_the_rest() -> None:
    with pytest.raises(DeployError) as caught:
        sim(_two_chains(), inject_failures=["left.a"])
    statuses = {e.id: e.status for e in caught.value.trace.events}
    assert statuses == {"left.a": "failed", "right.a": "cancelled"}


def test_keep_going_under_a_limit_starts_the_waiting_jobs() -> None:
    with pytest.raises(DeployError) as caught:
        sim(_two_chains(), keep_going=True, max_parallel=1, inject_failures=["left.a"])
    statuses = {e.id: e.status for e in caught.value.trace.events}
    assert statuses == {"left.a": "failed", "right.a": "ok", "right.b": "ok"}


def test_an_injected_failure_on_one_host(tmp_path: Path) -> None:
    inventory = inventory_from_dict(
        {"all": {"hosts": {h: {"ansible_connection": "local"} for h in ("h1", "h2")}}}
    )
    comp = component("One", ["a", "b"], [t("go", "a", "b", 1)])
    assembly = Assembly("one", (comp,), (instance("x", "One", on="all"),))
    with pytest.raises(DeployError) as caught:
        sim(assembly, inventory=inventory, inject_failures=["x.go@h2"], let_running_finish=True)
    statuses = {(e.host, e.status, e.attempts) for e in caught.value.trace.events}
    assert statuses == {("h1", "ok", 1), ("h2", "failed", 1)}


def test_retry_backoff_is_exponential_capped_and_jittered() -> None:
    import random

    from madeus import net
    from madeus.engine.executor import Executor
    from madeus.engine.options import RunOptions
    from madeus.engine.program import compile_program
    from madeus.plan import plan_of

    deployment = resolve(SMALL)
    compiled = net.compile(deployment)
    program = compile_program(compiled, plan_of(compiled))
    executor = Executor(
        "x",
        program,
        _Never(),
        inventory=deployment.inventory,
        params={},
        options=RunOptions(retry_backoff=1.0, retry_backoff_max=5.0),
        rng=random.Random(1),
    )
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0), (100, 5.0)]:
        delays = [executor.runner.retry_delay(attempt) for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full
        assert max(delays) - min(delays) > full / 4  # jitter spreads them


class _Never:
    async def run(self, job: object) -> object:
        raise AssertionError("not run")

    async def aclose(self) -> None:
        return None


def test_retries_wait_for_the_backoff(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    command = f"echo x >> {counter}; test $(wc -l < {counter}) -ge 3"
    comp = component(
        "C", ["a", "b"], [t("flaky", "a", "b", action=ShellAction(command), retries=2)]
    )
    events: list[Event] = []
    result = deploy_sync(
        Assembly("retry", (comp,), (instance("c", "C"),)),
        on_event=events.append,
        retry_backoff=0.2,
    )
    (event,) = result.trace.events
    assert (event.status, event.attempts) == ("ok", 3)
    ends = [e.end for e in events if isinstance(e, TransitionEnded)]
    starts = [e.time for e in events if isinstance(e, TransitionStarted)]
    assert starts[1] - ends[0] >= 0.1  # at least half of 0.2 s
    assert starts[2] - ends[1] >= 0.2  # at least half of 0.4 s
    assert starts[2] - ends[1] <= 0.4 + 0.2


def test_ssh_keepalives_come_from_options_or_the_inventory() -> None:
    from madeus.backends.router import BackendConfig, backend_config, inventory_setting
    from madeus.backends.ssh import SshBackend
    from madeus.errors import MadeusError

    inventory = inventory_from_dict(
        {
            "all": {
                "vars": {"madeus_ssh_keepalive_interval": "0.5"},
                "hosts": {"n1": {"ansible_host": "127.0.0.1"}},
            }
        }
    )
    interval = inventory_setting(None, inventory, "madeus_ssh_keepalive_interval", float)
    count = inventory_setting(None, inventory, "madeus_ssh_keepalive_count_max", int)
    assert (interval, count) == (0.5, None)
    assert inventory_setting(2.0, inventory, "madeus_ssh_keepalive_interval", float) == 2.0
    # The configuration every run builds (deployments and reconfigurations alike).
    config = backend_config(inventory, None, 1.0, None, ssh_keepalive_count_max=2)
    backend = SshBackend.from_config(config)
    assert (backend.keepalive_interval, backend.keepalive_count_max) == (0.5, 2)
    default = SshBackend.from_config(BackendConfig(inventory))
    assert (default.keepalive_interval, default.keepalive_count_max) == (5, 3)
    bad = inventory_from_dict({"all": {"vars": {"madeus_ssh_keepalive_count_max": "often"}}})
    with pytest.raises(MadeusError) as caught:
        inventory_setting(None, bad, "madeus_ssh_keepalive_count_max", int)
    assert str(caught.value) == (
        "inventory variable madeus_ssh_keepalive_count_max must be a number, not 'often'"
    )


# --- backends that raise, threads, hidden queues ---------------------------------------------


class Raising:
    """A backend with a bug: it raises instead of returning an outcome."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def run(self, job: object) -> object:
        raise self.error

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("error", [TimeoutError("read timed out"), KeyError("x")])
def test_a_backend_that_raises_is_an_internal_error_not_a_traceback(
    error: BaseException, tmp_path: Path
) -> None:
    """A backend raising TimeoutError (not the transition's timeout) once ended in an
    ExceptionGroup. It is a bug in madeus: the job fails with a message that says so, the
    traceback goes to the job's log, and the run ends like after any failure."""
    comp = component("C", ["a", "b"], [t("go", "a", "b", action=ShellAction("true"))])
    with pytest.raises(DeployError) as caught:
        deploy_sync(
            Assembly("bug", (comp,), (instance("c", "C"),)),
            backend=Raising(error),  # type: ignore[arg-type]
            run_dir=tmp_path / "run",
        )
    log = tmp_path / "run" / "c.go@localhost.err"
    kind = type(error).__name__
    assert caught.value.message == (
        f"internal error in madeus (a bug: please report it): {kind}: {error}; the traceback "
        f"is in {log}"
    )
    assert log.read_text().startswith("madeus: internal error while running c.go:\nTraceback")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


NAP_STARTS: list[float] = []


def sleep_one_second(ctx: object) -> str:
    import time

    NAP_STARTS.append(time.monotonic())
    time.sleep(1)
    return "slept"


def test_synchronous_python_actions_never_queue_behind_a_thread_pool() -> None:
    """12 independent 1 s actions on 2 cores once took 2 s, half of them waiting for a
    thread of the default pool while the trace showed them running."""
    comp = component(
        "C",
        ["a", "b"],
        [t("nap", "a", "b", action=PythonAction("test_engine:sleep_one_second"))],
    )
    assembly = Assembly("naps", (comp,), tuple(instance(f"c{i}", "C") for i in range(12)))
    NAP_STARTS.clear()
    result = deploy_sync(assembly)
    assert len(result.trace.events) == 12
    # All twelve really started together (a pool of 6 would start the second six 1 s later).
    assert max(NAP_STARTS) - min(NAP_STARTS) < 0.5, NAP_STARTS


def test_a_timeout_stops_waiting_for_a_synchronous_python_action() -> None:
    comp = component(
        "C",
        ["a", "b"],
        [t("nap", "a", "b", action=PythonAction("test_engine:sleep_one_second"), timeout=0.2)],
    )
    with pytest.raises(DeployError) as caught:
        deploy_sync(Assembly("nap", (comp,), (instance("c", "C"),)))
    (event,) = caught.value.trace.events
    assert event.status == "timeout"
    assert event.end - event.start < 0.7


def test_an_instance_on_no_host_never_counts_as_done() -> None:
    """Only a deployment built by hand can place an instance on no host (resolving refuses
    it): the verifier reports it, and the engine refuses to run rather than take its
    transitions as ended."""
    from dataclasses import replace

    from madeus.errors import MadeusError
    from madeus.verify import verify

    deployment = resolve(SMALL)
    db = deployment.instance("db")
    nowhere = replace(
        deployment,
        instances=tuple(replace(i, hosts=()) if i is db else i for i in deployment.instances),
        _by_name={i.name: i for i in deployment.instances} | {"db": replace(db, hosts=())},
    )
    message = 'instance "db" runs on no host: its transitions could never run'
    assert [d.message for d in verify(nowhere) if d.code == "no-host"] == [message]
    with pytest.raises(MadeusError) as caught:
        deploy_sync(nowhere, simulate=True, time_scale=0)
    assert [d.message for d in caught.value.diagnostics] == [message]


@pytest.mark.skipif(sys.platform != "linux", reason="timer slack is Linux's")
def test_runs_make_timers_precise_and_put_the_slack_back_even_when_they_overlap() -> None:
    import ctypes

    from madeus.engine import deploy

    libc = ctypes.CDLL(None)
    slack = libc.prctl(30, 0, 0, 0, 0)  # PR_GET_TIMERSLACK
    seen: list[int] = []

    class Probe:
        async def run(self, job: object) -> object:
            from madeus.backends.base import Outcome

            seen.append(libc.prctl(30, 0, 0, 0, 0))
            await asyncio.sleep(0.01)
            return Outcome(ok=True)

        async def aclose(self) -> None:
            return None

    async def both() -> None:
        first = asyncio.create_task(deploy(resolve(SMALL), backend=Probe()))
        await asyncio.sleep(0.005)  # the second starts while the first runs, and ends later
        await deploy(resolve(SMALL), backend=Probe())
        await first

    asyncio.run(both())
    assert seen and set(seen) == {1}
    assert libc.prctl(30, 0, 0, 0, 0) == slack


def test_run_options_are_one_checked_object_and_keywords_replace_its_fields() -> None:
    from madeus.engine import deploy_sync
    from madeus.engine.options import RunOptions, run_options

    for bad in ({"max_parallel": 0}, {"time_scale": -1.0}, {"retry_backoff": -0.5}):
        with pytest.raises(ValueError):
            RunOptions(**bad)  # type: ignore[arg-type]
    base = RunOptions(simulate=True, time_scale=0.5, inject_failures=["a.b"])  # type: ignore[arg-type]
    assert base.inject_failures == ("a.b",) and base.scale == 0.5 and base.mode == "local"
    assert RunOptions(time_scale=0.5).scale == 1.0  # a real run takes the time it takes
    assert run_options(base, {"time_scale": 0.0}) == RunOptions(
        simulate=True, time_scale=0.0, inject_failures=("a.b",)
    )
    with pytest.raises(TypeError, match="unexpected keyword argument 'simulat'"):
        deploy_sync(resolve(SMALL), simulat=True)
    result = deploy_sync(resolve(SMALL), RunOptions(simulate=True), time_scale=0.0)
    assert result.time_scale == 0.0 and result.makespan < 0.5
