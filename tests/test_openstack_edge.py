"""Day two on a real OpenStack for the edge (assemblies/openstack-lab/edge.mad) on `madeus
testbed`: a site added, a setting changed, the site removed, each by editing the files and
running `madeus plan` and `madeus apply`, while a probe uses the existing regions.

1. `madeus deploy` with the central site and two edge sites (the testbed's third edge host is
   in the inventory, not in its `sites`).
2. The inventory's `sites` gets `edge3`: `plan` shows only that site's three instances,
   `apply` deploys just them, the smoke check passes in region edge3-1.
3. The Glances' `workers` change: only the Glances run (`stop`, then `update`: their `on change
   of`); Nova's API stays available, as the model says (nothing it uses leaves its group).
4. `edge3` leaves `sites`: its instances are uninstalled, the site's Common after the services
   that use it; `plan` then says nothing to change.
Throughout, a probe lists the images of every existing region and the servers every 0.5 s:
no error, except images while the Glances restart (step 3), where the model says the image
service is not provided. Gated like tests/test_openstack_lab.py (it shares its prerequisites).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_openstack_lab import CACHE, LAB_MARKS, MISSING, PASSWORDS, madeus, run

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "assemblies" / "openstack-lab"
REGIONS = ("control-1", "edge1-1", "edge2-1")
NEW = ["site_common[edge3]", "glance[edge3]", "nova_compute[edge3]"]

pytestmark = LAB_MARKS

TESTBED = """
resources: {control: 1, edge1: 1, edge2: 1, edge3: 1}
network_constraints: {default_delay: 10ms, default_rate: 1gbit}
sites: {central: [control], edge1: [edge1], edge2: [edge2], edge3: [edge3]}
"""

# Run by the lab's Python (openstacksdk): every 0.5 s, the images of each region and the
# servers, one JSON line per call, until the file argv[2] exists.
PROBE = r"""
import json, os, sys, time
import openstack
auth_url, stop, regions = sys.argv[1], sys.argv[2], sys.argv[3:]
def connect(region):
    return openstack.connect(auth_url=auth_url, username="admin",
        password=os.environ["OSLAB_ADMIN_PASSWORD"], project_name="admin",
        user_domain_name="Default", project_domain_name="Default",
        identity_api_version="3", region_name=region)
conns = {r: connect(r) for r in regions}
while not os.path.exists(stop):
    began = time.time()
    for what, region in [("images", r) for r in regions] + [("servers", regions[0])]:
        try:
            c = conns[region]
            list(c.image.images() if what == "images" else c.compute.servers())
            line = {"t": time.time(), "what": what, "region": region, "ok": True}
        except Exception as error:
            line = {"t": time.time(), "what": what, "region": region, "ok": False,
                    "error": f"{type(error).__name__}: {str(error)[:200]}"}
        print(json.dumps(line), flush=True)
    time.sleep(max(0.0, 0.5 - (time.time() - began)))
"""


@pytest.fixture
def edge(tmp_path: Path, lab_env: dict[str, str]) -> Iterator[Path]:
    """The testbed (four hosts, four sites) in tmp/tb; removed afterwards, with everything the
    deployment started in its hosts."""
    if MISSING:
        pytest.fail("MADEUS_OPENSTACK_LAB=1 but the machine is not prepared: " + ", ".join(MISSING))
    spec = tmp_path / "edge-testbed.yml"
    spec.write_text(TESTBED)
    directory = tmp_path / "tb"
    done = madeus("testbed", "up", spec, "-o", directory, cwd=tmp_path, env=lab_env)
    assert done.returncode == 0, done.stderr
    try:
        yield directory
    finally:
        down = madeus("testbed", "down", directory, cwd=tmp_path, env=lab_env)
        assert down.returncode == 0, down.stderr
        assert not directory.exists()


def with_sites(inventory: Path, full: str, sites: list[str]) -> None:
    """Write the testbed's inventory with only `sites` in madeus_sites (the same file: the
    state of record belongs to one assembly and one inventory)."""
    document = yaml.safe_load(full)
    kept = document["all"]["vars"]["madeus_sites"]
    document["all"]["vars"]["madeus_sites"] = {s: kept[s] for s in sites}
    inventory.write_text(yaml.safe_dump(document, sort_keys=False))


def trace_of(out: str, cwd: Path) -> dict[str, object]:
    line = next(x for x in out.splitlines() if x.startswith("trace:"))
    loaded: dict[str, object] = json.loads((cwd / line.split(":", 1)[1].strip()).read_text())
    return loaded


def test_a_site_added_a_setting_changed_the_site_removed_by_plan_and_apply(
    edge: Path, tmp_path: Path, lab_env: dict[str, str]
) -> None:
    lab = tmp_path / "lab"
    shutil.copytree(LAB, lab, ignore=shutil.ignore_patterns(".madeus"))
    mad = lab / "edge.mad"
    inventory = edge / "inventory.yml"
    full = inventory.read_text()
    with_sites(inventory, full, ["central", "edge1", "edge2"])

    def cli(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return madeus(*args, cwd=tmp_path, env=lab_env, timeout=timeout)

    done = cli("deploy", mad, "-i", inventory)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    control = yaml.safe_load(full)["all"]["children"]["control"]["hosts"]["control-1"]
    auth_url = f"http://{control['madeus_address']}:5000/v3"
    stop = tmp_path / "probe.stop"
    python = str(CACHE / "venv" / "bin" / "python")
    probe_env = {**lab_env, "PYTHONWARNINGS": "ignore"}
    with (tmp_path / "probe.jsonl").open("w") as sink:
        probe = subprocess.Popen(
            [python, "-c", PROBE, auth_url, str(stop), *REGIONS],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=probe_env,
        )
    try:
        time.sleep(3)
        # 2. A site joins: only the inventory changes.
        inventory.write_text(full)
        planned = cli("plan", mad, "-i", inventory, "--format", "json", "--detailed-exitcode")
        assert planned.returncode == 2, planned.stderr
        document = json.loads(planned.stdout)
        assert document["changes"]["add"] == NEW
        assert (document["changes"]["remove"], document["changes"]["change"]) == ([], {})
        added = cli("apply", mad, "-i", inventory)
        assert added.returncode == 0, added.stdout[-3000:] + added.stderr[-3000:]
        made = {"add": trace_of(added.stdout, tmp_path)}
        events = made["add"]["events"]
        assert isinstance(events, list) and events
        assert {e["id"].split(".")[0] for e in events} == set(NEW)
        assert {e["status"] for e in events} == {"ok"}
        smoke = run(
            sys.executable,
            lab / "smoke-check",
            inventory,
            "--compute-region",
            "control-1",
            "--region",
            "edge3-1",
            cwd=tmp_path,
            env=lab_env,
            timeout=300,
        )
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr

        # 3. A setting that needs a restart: only the Glances run.
        mad.write_text(
            mad.read_text().replace(
                'Glance(region = "@host")', 'Glance(region = "@host", workers = 3)'
            )
        )
        planned = cli("plan", mad, "-i", inventory, "--format", "json")
        assert planned.returncode == 0, planned.stderr
        changed = json.loads(planned.stdout)["changes"]["change"]
        assert sorted(changed) == [f"glance[{s}]" for s in ("central", "edge1", "edge2", "edge3")]
        restart_began = time.time()
        restarted = cli("apply", mad, "-i", inventory)
        restart_ended = time.time()
        assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
        made["restart"] = trace_of(restarted.stdout, tmp_path)
        events = made["restart"]["events"]
        assert isinstance(events, list)
        assert {e["id"].split(".", 1)[1] for e in events} == {"stop", "restart"}
        assert {e["id"].split("[")[0] for e in events} == {"glance"}

        # 4. The site leaves: uninstalled, the services before the Common they use.
        with_sites(inventory, full, ["central", "edge1", "edge2"])
        removed = cli("apply", mad, "-i", inventory)
        assert removed.returncode == 0, removed.stdout[-3000:] + removed.stderr[-3000:]
        made["remove"] = trace_of(removed.stdout, tmp_path)
        events = made["remove"]["events"]
        assert isinstance(events, list)
        ends = {e["id"]: e["end"] for e in events}
        starts = {e["id"]: e["start"] for e in events}
        assert set(ends) == {
            "glance[edge3].stop",
            "glance[edge3].remove",
            "nova_compute[edge3].remove",
            "site_common[edge3].drop_upload",
            "site_common[edge3].drop_pull",
        }
        users = max(ends["glance[edge3].remove"], ends["nova_compute[edge3].remove"])
        assert starts["site_common[edge3].drop_upload"] >= users
        again = cli("plan", mad, "-i", inventory, "--detailed-exitcode")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "No changes" in again.stdout
        time.sleep(2)
    finally:
        stop.touch()
        try:
            probe.wait(timeout=30)
        finally:
            probe.kill()

    lines = (tmp_path / "probe.jsonl").read_text().splitlines()
    calls = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(calls) > 40, lines[-20:]  # it probed all along
    failed = [c for c in calls if not c["ok"]]
    allowed = [
        c for c in failed if c["what"] == "images" and restart_began <= c["t"] <= restart_ended
    ]
    assert [c for c in failed if c not in allowed] == []
    assert any(c["ok"] and c["t"] > restart_ended for c in calls if c["what"] == "images")

    summary = ", ".join(
        f"{step} {len(t['events'])} jobs in {t['makespan']:.1f} s"  # type: ignore[arg-type]
        for step, t in made.items()
    )
    print(f"\nopenstack edge, day two: {summary}; probe: {len(calls)} calls, {len(failed)} failed")

    # The secrets are in no file of the state, the journal or the logs.
    files = [p for p in (lab / ".madeus").rglob("*") if p.is_file()]
    files += [p for p in (tmp_path / ".madeus").rglob("*") if p.is_file()]
    texts = [p.read_text(errors="replace") for p in files]
    for name in PASSWORDS:
        assert not any(lab_env[name] in text for text in texts), name
