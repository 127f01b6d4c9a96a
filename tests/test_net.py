"""The dependency net (`madeus.net.compile`): what the plan and the verifier read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from madeus import net
from madeus.errors import VerifyError
from madeus.frontend import load_text
from madeus.plan import PlanError, build_plan, plan_of
from madeus.resolve import Deployment, resolve
from madeus.verify import verify

SOURCE = """\
component Db() {
    places off*, up, ready
    transition start: off -> up  ~2s
    transition load: off -> up  ~3s
    transition check: up -> ready  ~1s
    provide service db at up, ready
}
component App() {
    places off*, on
    transition go: off -> on  ~1s
    use service db for go
    use service cache optional for go
}
assembly pair {
    db = Db()
    a = App()
    b = App()
    connect a.db -> db.db
    connect b.db -> db.db
}
"""


def deployment() -> Deployment:
    module = load_text(SOURCE, "pair.mad")
    assert module.assembly is not None
    return resolve(module.assembly)


def test_instances_of_a_type_share_one_shape_and_each_connected_port_its_provider() -> None:
    compiled = net.compile(deployment())
    db, a, b = compiled.instances
    assert a.shape is b.shape and a.shape is not db.shape
    assert db.shape.entering == {"up": ("start", "load"), "ready": ("check",)}
    assert a.shape.bound == {"go": ("db", "cache")}
    assert set(compiled.provider) == {("a", "db"), ("b", "db")}  # cache: not connected
    served = compiled.provider[("a", "db")]
    assert served.instance is db and served.port is not None
    assert served.port.places == ("up", "ready")
    assert compiled.problems == ()
    assert plan_of(compiled) == build_plan(compiled.deployment)


def test_a_connection_to_a_missing_provide_port_is_refused_by_plan_and_verifier() -> None:
    d = deployment()
    broken = replace(d.links[0], provider_port="nope")
    d = replace(d, links=(broken, d.links[1]), _provider={**d._provider, ("a", "db"): broken})
    compiled = net.compile(d)
    (problem,) = compiled.problems
    assert problem.code == "unknown-port"
    assert problem.message == 'connection names unknown provide port "db.nope"'
    with pytest.raises(PlanError) as planned:
        plan_of(compiled)
    assert [x.code for x in planned.value.diagnostics] == ["unknown-port"]
    with pytest.raises(VerifyError) as verified:
        verify(d)
    assert [x.code for x in verified.value.diagnostics] == ["unknown-port"]
