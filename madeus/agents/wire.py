"""What travels between the controller and an agent: one JSON array per line, both ways, over
the standard input and output of the agent's process (an SSH session of the connection the
controller has to the agent's host).

The controller hands the work once, as a pickle (both ends run the same madeus, checked by
hash before anything else is said): the program, the site's hosts, the parameters of the
site's instances (secrets included: they never leave memory on the agent's host), the run's
options. Everything an agent sends is plain JSON that the controller checks: an agent cannot
make the controller run anything, nor speak for another site's jobs.

controller -> agent                        agent -> controller
  ["work", BASE64]                           ["hello", VERSION, HASH]
  ["ping", T]                                ["ready", [PROBLEM...]]
  ["start"]                                  ["pong", T, MONOTONIC]
  ["end", SLOT, OUTPUT|null]                 ["t0", MONOTONIC]
  ["data", INSTANCE, PORT, VALUE, SECRET]    ["s", JOB, AT, ATTEMPT]
  ["stop"]                                   ["e", JOB, STATUS, START, END, ATTEMPTS,
  ["finish"]                                       EXIT, MESSAGE, STDERR_TAIL, OUTPUT|null]
                                             ["data", INSTANCE, PORT, VALUE, SECRET]
                                             ["idle", RECEIVED]
                                             ["done", ERROR|null]

Times in "s" and "e" are seconds from the agent's "t0"; the controller maps them to its own
clock with the offset measured by "ping".
"""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from madeus.engine.options import RunOptions
from madeus.engine.program import Program
from madeus.engine.values import InstanceValues
from madeus.inventory import Inventory


@dataclass(frozen=True, slots=True)
class Work:
    assembly: str
    run_id: str
    site: str
    program: Program  # other sites' hosts reduced to their names
    slots: frozenset[int]  # the transitions this agent runs
    needs: frozenset[int]  # the other parties' transitions whose end it is told
    instances: frozenset[str]  # the instances it runs (it computes their data values)
    params: Mapping[str, InstanceValues] = field(repr=False)
    inventory: Inventory = field(repr=False)  # the site's hosts, as reached inside the site
    options: RunOptions = field(default_factory=RunOptions)
    known_hosts: str = ""  # known_hosts lines for the site's hosts, as reached inside it
    skip: frozenset[int] = frozenset()  # jobs that ended in an earlier run (a resume)
    outputs: Mapping[int, str] = field(default_factory=dict, repr=False)
    data: Mapping[tuple[str, str], str] = field(default_factory=dict, repr=False)


def line(*fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def work_line(work: Work) -> bytes:
    payload = base64.b64encode(pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL))
    return b'["work","' + payload + b'"]\n'


def read_work(text: str) -> Work:
    # Only the controller writes to the agent's standard input (an SSH session it opened).
    work = pickle.loads(base64.b64decode(text))
    if not isinstance(work, Work):
        raise ValueError("not a madeus agent's work")
    return work


def parse(raw: bytes) -> list[Any]:
    """One message; ValueError when it is not a JSON array starting with a name."""
    message = json.loads(raw)
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise ValueError(f"not a message: {raw[:80]!r}")
    return message
