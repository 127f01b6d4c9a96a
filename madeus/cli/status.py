"""`madeus status FILE [-i INVENTORY]`: what the journal says about this deployment.

For each transition and host of the plan: `done`, `running` (a run holds the lock now),
`running when stopped` (started, never ended: the run stopped or died meanwhile; also those
it cancelled), `failed`, `timeout` or `not started`; the run of its last record and when that
was. Then who holds the lock, if anyone. Reads the journal without taking the lock, so it works
while a deployment runs. Exit 0 (1 when the assembly or the journal cannot be read).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from madeus.cli._common import EXIT_OK, add_inventory_arg, add_state_arg, reports_errors, state_base

if TYPE_CHECKING:
    from madeus.engine.journal import JobRecord, JournalState, LockHolder

ORDER = ("done", "running", "running when stopped", "failed", "timeout", "not started")


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="show what the journal says about a deployment",
        description="Show, per transition and host, what the journal of this assembly and "
        "inventory records: done, running when stopped, not started; the last run and the "
        "holder of the lock.",
    )
    parser.add_argument("file", metavar="FILE", help="the .mad file holding the assembly")
    add_inventory_arg(parser)
    add_state_arg(parser)
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="show the journal of the simulated runs (`deploy --simulate`) instead",
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (text)"
    )
    parser.set_defaults(func=run)


@reports_errors
def run(args: argparse.Namespace) -> int:
    from madeus.cli.check import load_existing
    from madeus.engine.journal import JOURNAL_FILE, read_journal
    from madeus.plan import build_plan

    loaded = load_existing(args.file, args)
    plan = build_plan(loaded.deployment)
    base = state_base(args, loaded, simulate=args.simulate)
    state, holder, directory = read_journal(
        args.file, loaded.inventory_key, simulate=args.simulate, base=base
    )
    rows = []
    for t in plan.transitions:
        for host in t.hosts:
            record = state.jobs.get((t.id, host))
            rows.append((t.id, host, _state_of(record, holder), record))
    counts = {name: 0 for name in ORDER}
    for _, _, what, _ in rows:
        counts[what.split(" (")[0]] += 1
    from madeus.reconfig.state import final_places
    from madeus.state import load

    kept = load(directory)
    types = {c.name: c for c in loaded.deployment.assembly.components}
    instances = []  # (name, type, hosts, places, deployed) as the state of record has them
    for inst in kept.instances if kept is not None else ():
        component = types.get(inst.type)
        deployed = component is not None and frozenset(inst.places) == final_places(component)
        instances.append((inst.name, inst.type, inst.hosts, inst.places, deployed))
    if args.format == "json":
        document = _as_json(state, holder, str(directory / JOURNAL_FILE), rows, counts)
        document["instances"] = [
            {"name": n, "type": t, "hosts": list(h), "places": list(p), "deployed": d}
            for n, t, h, p, d in instances
        ]
        print(json.dumps(document))
        return EXIT_OK
    out = sys.stdout
    out.write(f"journal:  {directory / JOURNAL_FILE}")
    out.write("\n" if state.runs else " (none yet: nothing deployed)\n")
    last = state.last_run
    if last is not None:
        how = last.status or ("running" if holder is not None else "stopped without an end record")
        resumed = " (resumed)" if last.resume else ""
        out.write(f"last run: {last.id}{resumed}, started {last.started_at}, {how}\n")
    out.write(f"lock:     {'held by ' + holder.describe() if holder else 'free'}\n")
    if state.torn:
        out.write("note:     a torn last record (a crash while writing) was ignored\n")
    id_width = max([len("transition"), *(len(r[0]) for r in rows)])
    host_width = max([len("host"), *(len(r[1]) for r in rows)])
    state_width = max([len("state"), *(len(r[2]) for r in rows)])
    out.write(f"\n{'transition':<{id_width}}  {'host':<{host_width}}  {'state':<{state_width}}")
    out.write("  run                          time\n")
    for tid, host, what, record in rows:
        run_id = record.run if record is not None else ""
        when = _when(state, record) if record is not None else ""
        line = f"{tid:<{id_width}}  {host:<{host_width}}  {what:<{state_width}}  {run_id:<27}  "
        out.write(f"{line}{when}".rstrip() + "\n")
    summary = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    out.write(f"\n{summary} ({len(rows)} jobs)\n")
    if kept is not None and instances:
        # The deploy jobs above are the deploy runs'; where each instance is now (after
        # reconfigurations and `apply` too) is the state of record's.
        out.write(f"\ninstances (state of record, updated {kept.updated_at}):\n")
        width = max(len(i[0]) for i in instances)
        type_width = max(len(i[1]) for i in instances)
        for name, type_name, hosts, places, deployed in instances:
            mark = "deployed" if deployed else f"in {', '.join(places) or 'no place'}"
            line = f"  {name:<{width}}  {type_name:<{type_width}}  {mark}  on {', '.join(hosts)}"
            out.write(line + "\n")
    return EXIT_OK


def _state_of(record: JobRecord | None, holder: LockHolder | None) -> str:
    if record is None:
        return "not started"
    if record.status == "ok":
        return "done (assumed)" if record.assumed else "done"
    if record.status == "running":
        return "running" if holder is not None else "running when stopped"
    if record.status == "cancelled":
        return "running when stopped (cancelled)"
    return record.status


def _when(state: JournalState, record: JobRecord) -> str:
    from datetime import datetime, timedelta

    run = state.run(record.run)
    if run is None:
        return ""
    try:
        started = datetime.strptime(run.started_at, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return ""
    return (started + timedelta(seconds=record.at)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_json(
    state: JournalState,
    holder: LockHolder | None,
    path: str,
    rows: list[tuple[str, str, str, JobRecord | None]],
    counts: dict[str, int],
) -> dict[str, Any]:
    return {
        "journal": path,
        "lock": None
        if holder is None
        else {
            "pid": holder.pid,
            "host": holder.host,
            "user": holder.user,
            "started_at": holder.started_at,
            "command": list(holder.command),
        },
        "runs": [
            {"id": r.id, "started_at": r.started_at, "resume": r.resume, "status": r.status}
            for r in state.runs
        ],
        "jobs": [
            {
                "id": tid,
                "host": host,
                "state": what,
                "run": record.run if record is not None else None,
                "time": _when(state, record) if record is not None else None,
            }
            for tid, host, what, record in rows
        ],
        "summary": {name: n for name, n in counts.items() if n},
    }
