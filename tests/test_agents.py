"""Site agents in simulated runs: the agents are real `python -m madeus.agents` processes
speaking the real protocol over pipes (a simulated run touches no host), so the split, the
relay, the trace merge, failures, `keep_going`, resumes and the controller's checks of what an
agent says are all exercised without a testbed (tests/test_agents_testbed.py runs them over
SSH)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine import assemblies

from madeus.agents import relay
from madeus.engine import DeployError, deploy_sync
from madeus.engine.journal import open_journal
from madeus.engine.validate import validate
from madeus.errors import MadeusError
from madeus.frontend import load_text
from madeus.inventory import Group, Host, Inventory
from madeus.model import Assembly, Instance, Target
from madeus.resolve import resolve
from madeus.trace import AgentRecord, Trace, TraceEvent

# A run that waits forever for an agent fails instead of hanging the suite.
pytestmark = pytest.mark.timeout(120)
SCALE = 0.01
HOSTS = {"c-1": "central", "e-1": "edge", "e-2": "edge", "f-1": "far"}


def inventory() -> Inventory:
    hosts = {n: Host(n, f"10.77.0.{i + 1}") for i, n in enumerate(HOSTS)}
    sites: dict[str, tuple[str, ...]] = {}
    for name, site in HOSTS.items():
        sites[site] = (*sites.get(site, ()), name)
    groups = {
        "all": Group("all", tuple(hosts), members=tuple(hosts)),
        **{n: Group(n, (n,), members=(n,)) for n in hosts},
        **{s: Group(s, members, members=members) for s, members in sites.items()},
    }
    return Inventory(hosts=hosts, groups=groups, sites=sites)


EDGE = textwrap.dedent(
    """\
    component Registry {
        places off*, on
        transition start: off -> on  shell "sleep 1"  ~1s
        provide service registry: reg at on
        provide data url = "http://{host.address}:5000" at on
    }
    component Agent {
        places a*, b, c, d
        transition install: a -> b  shell "true"  ~1s
        transition register: b -> c  shell "echo {url}"  ~1s
        transition check: c -> d  shell "true"  ~2s
        use service registry: reg for register
        use data url for register
    }
    assembly edge {
        registry = Registry on central
        near = Agent on edge
        far = Agent on far
        connect near.registry -> registry.registry
        connect near.url -> registry.url
        connect far.registry -> registry.registry
        connect far.url -> registry.url
    }
    """
)


def edge() -> Assembly:
    module = load_text(EDGE, "edge.mad")
    assert module.assembly is not None
    return module.assembly


def jobs(trace: Trace) -> list[tuple[str, str, str]]:
    return sorted((e.id, e.host, e.status) for e in trace.events)


def test_each_site_runs_its_part_and_the_trace_is_one() -> None:
    alone = deploy_sync(edge(), inventory=inventory(), simulate=True, time_scale=SCALE)
    result = deploy_sync(
        edge(), inventory=inventory(), simulate=True, time_scale=SCALE, agents=True
    )
    assert jobs(result.trace) == jobs(alone.trace)
    assert validate(result.trace, result.plan) == []
    ran = {a.site: (a.host, a.instances) for a in result.trace.agents}
    assert ran == {
        "central": ("c-1", ("registry",)),
        "edge": ("e-1", ("near",)),
        "far": ("f-1", ("far",)),
    }
    assert all(0 <= a.delay < 0.5 for a in result.trace.agents)
    # The cross-site dependency is kept: nobody registers before the registry is up.
    up = next(e.end for e in result.trace.events if e.id == "registry.start")
    assert min(e.start for e in result.trace.events if e.id.endswith(".register")) >= up


def test_without_agents_the_trace_says_none() -> None:
    result = deploy_sync(edge(), inventory=inventory(), simulate=True, time_scale=SCALE)
    assert result.trace.agents == ()
    assert "agents" not in result.trace.to_json()


def test_a_failure_on_a_site_stops_every_site() -> None:
    with pytest.raises(DeployError) as caught:
        deploy_sync(
            edge(),
            inventory=inventory(),
            simulate=True,
            time_scale=SCALE,
            agents=True,
            inject_failures=("far.install",),
        )
    (failure,) = caught.value.failures
    assert (failure.transition, failure.host) == ("far.install", "f-1")
    ran = {(e.id, e.host) for e in caught.value.trace.events}
    assert ("far.register", "f-1") not in ran
    assert ("near.check", "e-1") not in ran  # stopped with the run (2 s from the end)


def test_keep_going_finishes_every_other_site() -> None:
    with pytest.raises(DeployError) as caught:
        deploy_sync(
            edge(),
            inventory=inventory(),
            simulate=True,
            time_scale=SCALE,
            agents=True,
            keep_going=True,
            inject_failures=("far.install",),
        )
    assert [f.transition for f in caught.value.failures] == ["far.install"]
    done = {(e.id, e.host) for e in caught.value.trace.events if e.status == "ok"}
    assert {("near.check", "e-1"), ("near.check", "e-2"), ("registry.start", "c-1")} <= done
    assert not any(tid.startswith("far.") for tid, _ in done)


def test_a_resumed_run_skips_what_agents_ended(tmp_path: Path) -> None:
    deployment = resolve(edge(), inventory())
    journal = open_journal(tmp_path / "edge.mad", None, base=tmp_path / "state")
    with pytest.raises(DeployError):
        deploy_sync(
            deployment,
            simulate=True,
            time_scale=SCALE,
            agents=True,
            journal=journal,
            inject_failures=("near.register@e-2",),
        )
    result = deploy_sync(
        deployment, simulate=True, time_scale=SCALE, agents=True, journal=journal, resume=True
    )
    status = {(e.id, e.host): e.status for e in result.trace.events}
    assert status[("registry.start", "c-1")] == "skipped"
    assert status[("near.install", "e-2")] == "skipped"
    assert status[("near.register", "e-2")] == "ok"
    assert status[("near.check", "e-2")] == "ok"
    assert validate(result.trace, result.plan) == []


LIAR = """\
import json, sys
from madeus.agents.ship import source_hash
from madeus import __version__
out = sys.stdout
def say(*m):
    out.write(json.dumps(m) + "\\n"); out.flush()
say("hello", __version__, source_hash())
for line in sys.stdin:
    kind = json.loads(line)[0]
    if kind == "work":
        say("ready", [])
    elif kind == "ping":
        say("pong", json.loads(line)[1], 0.0)
    elif kind == "start":
        say("t0", 0.0)
        say("e", JOB, "ok", 0.0, 0.1, 1, 0, "", "", None)
"""


@pytest.mark.parametrize("job", [0, 10_000, "'x'"])
def test_an_agent_speaks_only_for_its_own_jobs(
    job: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent saying a job of another site ended (job 0 is the registry's, not far's), a job
    that does not exist, or not a job at all, stops the run; nothing it said is believed."""
    script = tmp_path / "liar.py"
    script.write_text(LIAR.replace("JOB", str(job)))
    real, spawn = relay.LOCAL_AGENT, asyncio.create_subprocess_exec
    calls: list[int] = []

    async def pick(*argv: str, **kw: object) -> asyncio.subprocess.Process:
        calls.append(1)
        # The far site's agent lies; the others are real.
        command = [sys.executable, str(script)] if len(calls) == 3 else real
        return await spawn(*command, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(relay.asyncio, "create_subprocess_exec", pick)
    with pytest.raises(DeployError) as caught:
        deploy_sync(edge(), inventory=inventory(), simulate=True, time_scale=SCALE, agents=True)
    messages = [f.message for f in caught.value.failures]
    assert any("is not site far's" in m or "not an integer" in m for m in messages), messages
    assert not any(e.id == "registry.start" and e.host != "c-1" for e in caught.value.trace.events)
    assert ("far.install", "f-1", "ok") not in jobs(caught.value.trace)


def test_an_agent_that_cannot_start_is_reported_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay, "LOCAL_AGENT", [sys.executable, "-c", "import sys; sys.exit(3)"])
    with pytest.raises(MadeusError) as caught:
        deploy_sync(edge(), inventory=inventory(), simulate=True, time_scale=SCALE, agents=True)
    text = str(caught.value)
    assert 'the agent of site "far" on f-1: it did not start' in text


def placed(assembly: Assembly, where: list[str]) -> Assembly:
    instances = tuple(
        Instance(i.ref, i.type, Target(where[k % len(where)]), i.args)
        for k, i in enumerate(assembly.instances)
    )
    return Assembly(assembly.name, assembly.components, instances, assembly.connections)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assemblies(), st.lists(st.sampled_from([*sorted(HOSTS), "edge"]), min_size=1, max_size=5))
def test_random_assemblies_follow_the_semantics_with_agents(
    assembly: Assembly, where: list[str]
) -> None:
    """The engine's property test, in agent mode: random assemblies, their instances spread
    over the sites (a site's two hosts at once too), give valid traces with the same jobs."""
    spread = placed(assembly, where)
    alone = deploy_sync(spread, inventory=inventory(), simulate=True, time_scale=SCALE)
    result = deploy_sync(
        spread, inventory=inventory(), simulate=True, time_scale=SCALE, agents=True
    )
    assert validate(result.trace, result.plan) == []
    assert jobs(result.trace) == jobs(alone.trace)


def test_trace_check_allows_a_site_the_news_delay_and_no_more() -> None:
    """What an agent runs may start once the news reached it: the run's start after its
    one-way delay, another party's end after both delays. Later than that is late; before the
    dependency ended is early, whatever the delays."""
    plan = deploy_sync(edge(), inventory=inventory(), simulate=True, time_scale=SCALE).plan
    agents = (
        AgentRecord("central", "c-1", 0.1, ("registry",)),
        AgentRecord("edge", "e-1", 0.0, ("near",)),
        AgentRecord("far", "f-1", 0.2, ("far",)),
    )

    def trace(register: float, recorded: bool = True) -> Trace:
        """far.register waits for registry.start (central, ends at 1.1: far hears of it at
        1.1 + 0.1 + 0.2 = 1.4) and far.install (its own site, ends at 1.2)."""
        times = {
            ("registry.start", "c-1"): (0.1, 1.1),
            ("near.install", "e-1"): (0.0, 1.0),
            ("near.install", "e-2"): (0.0, 1.0),
            ("far.install", "f-1"): (0.2, 1.2),
            ("near.register", "e-1"): (1.2, 2.2),
            ("near.register", "e-2"): (1.2, 2.2),
            ("far.register", "f-1"): (register, register + 1),
            ("near.check", "e-1"): (2.2, 4.2),
            ("near.check", "e-2"): (2.2, 4.2),
            ("far.check", "f-1"): (register + 1, register + 3),
        }
        events = tuple(TraceEvent(t, h, a, b, "ok") for (t, h), (a, b) in times.items())
        return Trace("edge", "2026-12-08T00:00:00Z", register + 3, events, None,
                     agents if recorded else ())  # fmt: skip

    assert validate(trace(1.43), plan) == []
    late = validate(trace(1.5), plan)
    assert late == [
        "far.register @ f-1 started at 1.500000, 0.100000 s after it was ready at 1.200000 "
        "(its agent heard of it at 1.400000) (tolerance 0.05 s)"
    ]
    assert validate(trace(1.15), plan) == [
        "far.register @ f-1 started at 1.150000, before its dependencies ended at 1.200000"
    ]
    # Without the agents' record, the same run is late everywhere the news travelled.
    assert any("far.register @ f-1" in p for p in validate(trace(1.43, recorded=False), plan))
