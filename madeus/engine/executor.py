"""The deployment's scheduler: dependency counters over a compiled plan, on the job runner.

A transition is ready exactly when its dependency counter reaches zero, and that happens in the
code that records the end of its last dependency: no polling, no batching, no timers. The job
runner (`madeus.engine.runner`, shared with reconfigurations) runs its jobs, one per host, and
says when all have ended; this module counts down what that enables and computes the data
values of the places it reaches.

A resumed run skips the jobs the journal says have ended (`skip`): they "end" as soon as they
are ready, with status `skipped`, their recorded output, and no journal record.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Coroutine, Mapping
from pathlib import Path
from typing import Any

from madeus.backends.base import Backend
from madeus.engine.journal import Journal
from madeus.engine.options import RunOptions
from madeus.engine.program import Program
from madeus.engine.runner import EventSink, Inputs, OnRunner, Runner
from madeus.engine.values import InstanceValues, data_value, host_values
from madeus.errors import MadeusError
from madeus.inventory import Inventory
from madeus.model import OutputOf


class Executor(OnRunner):
    def __init__(
        self,
        assembly: str,
        program: Program,
        backend: Backend,
        *,
        inventory: Inventory,
        params: Mapping[str, InstanceValues],
        options: RunOptions | None = None,
        on_event: EventSink | None = None,
        run_dir: Path | None = None,
        predicted_makespan: float = 0.0,
        journal: Journal | None = None,
        skip: Collection[int] = (),
        outputs: Mapping[int, str] | None = None,
        data: Mapping[tuple[str, str], str] | None = None,
        rng: random.Random | None = None,
        owned: Collection[str] | None = None,
    ) -> None:
        """`skip`: jobs already ended (a resumed run); `outputs` (transition index -> output
        of its first host) and `data` ((instance, port) -> value) come with them. `owned`:
        the instances whose data values this party computes (None: all); the others' come
        from the party that runs them (`told_data`)."""
        self.assembly = assembly
        self._p = self.program = program
        self._inventory = inventory
        self._params = params
        self._predicted = predicted_makespan
        runner = self.runner = Runner(
            assembly,
            backend,
            inventory,
            options if options is not None else RunOptions(),
            on_event=on_event,
            run_dir=run_dir,
            journal=journal,
            job_records=True,
            rng=rng,
        )
        runner.scheduler = self
        for host in program.hosts:
            runner.add_host(host)
        for j, h in enumerate(program.job_host):
            runner.declare(program.transitions[program.job_trans[j]].action, h)
        base, needed = program.job_base, program.output_needed
        for i, tid in enumerate(program.ids):
            runner.add(
                tid,
                program.instance_of[i],
                program.transitions[i],
                program.job_host[base[i] : base[i + 1]],
                priority=program.priority[i],
                keep_output=i in needed,
            )
        runner.skip(skip)
        if outputs:
            runner.outputs.update(outputs)
        # Mutable run state: the counters.
        self._pending = list(program.pending)
        self._alt_left = list(program.alt_size)
        self._satisfied = bytearray(len(program.slot_owner))
        self._place_left = list(program.place_left)
        self._ended = 0
        self._data: dict[tuple[str, str], str] = dict(data or {})
        self._data_secret: set[tuple[str, str]] = set()
        self._inputs: dict[str, Inputs] = {}
        self._owned = None if owned is None else frozenset(owned)
        # Called with each data value this party computes: (instance, port), value, secret.
        self.on_data: Callable[[tuple[str, str], str, bool], None] | None = None
        self.finished = False

    async def run(
        self,
        until: Callable[[], Coroutine[Any, Any, None]] | None = None,
        t0: float | None = None,
        *,
        whole: bool = True,
    ) -> None:
        """Run to the end, or until a failure has stopped everything (see `failures`).
        `until` and `t0`: see `Runner.run` (other parties run part of the plan). `whole`: this
        party sees every transition end (not a site's agent), so one that never started is
        an error."""
        p = self._p
        await self.runner.run(
            self._begin,
            expected=(len(p.ids), p.jobs),
            predicted_makespan=self._predicted,
            until=until,
            t0=t0,
        )
        self.finished = not self.failures and self._ended == len(p.ids)
        if self.journal_error is not None or not whole:
            return
        if not self.failures and not self.finished:
            blocked = [p.ids[i] for i, c in enumerate(self._pending) if c > 0]
            raise MadeusError(f"deployment blocked: {', '.join(blocked[:10])} never started")

    def _begin(self) -> None:
        for place in self._p.initially_reached:
            self._reach_place(place)
        ready = self.runner.ready_queue.append
        for i, count in enumerate(self._pending):
            if count == 0:
                ready(i)

    # --- the scheduler ---------------------------------------------------------------------

    def ended(self, i: int) -> None:
        p = self._p
        self._ended += 1
        place = p.reach[i]
        if place >= 0:
            left = self._place_left[place] - 1
            self._place_left[place] = left
            if left == 0:
                try:
                    self._reach_place(place)
                except MadeusError as exc:  # a data value that cannot be rendered
                    self.runner.fail_slot(i, f"cannot compute a data port value: {exc}")
                    return
        pending = self._pending
        ready = self.runner.ready_queue.append
        for s in p.and_succ[i]:
            count = pending[s] - 1
            pending[s] = count
            if count == 0:
                ready(s)
        if p.alt_succ[i]:
            satisfied, alt_left = self._satisfied, self._alt_left
            for a in p.alt_succ[i]:
                alt_left[a] -= 1
                slot = p.alt_slot[a]
                if alt_left[a] == 0 and not satisfied[slot]:
                    satisfied[slot] = 1
                    s = p.slot_owner[slot]
                    count = pending[s] - 1
                    pending[s] = count
                    if count == 0:
                        ready(s)

    def inputs(self, i: int) -> Inputs:
        p = self._p
        instance = p.instance_of[i]
        uses = p.data_uses.get(instance, ())
        if not uses:
            found = self._inputs.get(instance)
            if found is None:
                found = self._inputs[instance] = Inputs(
                    self._params[instance], {}, p.workdir[instance]
                )
            return found
        used = {}
        for use in uses:
            key = (use.provider, use.provider_port)
            if key in self._data:
                used[use.port] = (self._data[key], key in self._data_secret)
        return Inputs(self._params[instance], used, p.workdir[instance])

    # --- data ports ------------------------------------------------------------------------

    def told_data(
        self, key: tuple[str, str], value: str, secret: bool, *, record: bool = False
    ) -> None:
        """A data value the party running its instance computed; `record`: journal it as
        if computed here (never a secret one)."""
        self._data[key] = value
        if secret:
            self._data_secret.add(key)
        elif record:
            self._record_data(key)

    def _reach_place(self, place: int) -> None:
        """A place bound to data provide ports is reached: compute the values it provides
        (the first place of a group to be reached provides the value; deployment is
        monotone)."""
        outputs = self.runner.outputs
        owned = self._owned
        for provide in self._p.place_provides[place]:
            key = (provide.instance, provide.port.name)
            if key in self._data or (owned is not None and provide.instance not in owned):
                continue
            value = provide.port.value
            if isinstance(value, OutputOf):
                if provide.producer in outputs:
                    self._data[key] = outputs[provide.producer]
                    self._record_data(key)
                    if self.on_data is not None:
                        self.on_data(key, self._data[key], False)
                continue
            if value is None:
                continue
            facts = {} if provide.host is None else host_values(self._inventory, provide.host)
            used = {
                use.port: (self._data[k], k in self._data_secret)
                for use in self._p.data_uses.get(provide.instance, ())
                for k in ((use.provider, use.provider_port),)
                if k in self._data
            }
            self._data[key], secret = data_value(value, self._params[provide.instance], facts, used)
            if secret:
                self._data_secret.add(key)  # never journaled: recomputed by a resume
            else:
                self._record_data(key)
            if self.on_data is not None:
                self.on_data(key, self._data[key], secret)

    def _record_data(self, key: tuple[str, str]) -> None:
        if self.runner.commit is None:
            return
        port = f"{key[0]}.{key[1]}"
        record = {"k": "data", "p": port, "v": self._data[key]}
        self.runner.jot(json.dumps(record, separators=(",", ":")) + "\n")
