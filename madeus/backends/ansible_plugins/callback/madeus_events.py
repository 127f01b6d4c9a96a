"""Ansible stdout callback `madeus_events`: every result as one JSON line for madeus.

Loaded by `ansible-playbook` itself (never imported by madeus), through
`ANSIBLE_CALLBACK_PLUGINS` and `ANSIBLE_STDOUT_CALLBACK=madeus_events`, which the Ansible
backend sets. Events go to the file descriptor named by `MADEUS_EVENTS_FD` (a pipe madeus
reads; standard output otherwise), one JSON object per line:

    {"e": "task", "task": NAME, "handler": BOOL}
    {"e": "start", "host": H, "task": NAME, "t": MONOTONIC}     (a task starts on a host)
    {"e": "ok" | "changed" | "failed" | "unreachable" | "skipped", "host": H, "task": NAME,
     "msg": TEXT, "rc": N, "stdout": TEXT, "stderr": TEXT, "ignored": BOOL, "t": MONOTONIC}
    {"e": "diff", "host": H, "task": NAME, "diff": TEXT}   (before its result, with --diff)
    {"e": "stats", "processed": [HOSTS], "failures": [HOSTS], "unreachable": [HOSTS]}

`t` is the system's monotonic clock (`time.monotonic()`), which madeus shares: when a host's
part of the play really started and ended. Results of tasks with `no_log` arrive censored by
Ansible itself. The pre-2.19 private attributes (`_host`, `_task`, `_result`) are read where
the public ones are missing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: madeus_events
    type: stdout
    short_description: JSON lines of results, for madeus
    description: Every task result as one JSON object per line, on MADEUS_EVENTS_FD.
"""

_TEXT_LIMIT = 1 << 20


def _field(result: Any, name: str) -> Any:
    value = getattr(result, name, None)  # ansible-core >= 2.19
    return value if value is not None else getattr(result, f"_{name}")


def _text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_TEXT_LIMIT]


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "madeus_events"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fd = os.environ.get("MADEUS_EVENTS_FD")
        # Not closed with the callback (Ansible may drop it before the play's process ends):
        # the process writes its last line there too.
        self._out = os.fdopen(int(fd), "w", encoding="utf-8", closefd=False) if fd else sys.stdout

    def _send(self, event: dict[str, Any]) -> None:
        self._out.write(json.dumps(event, default=str) + "\n")
        self._out.flush()

    def _result(self, kind: str, result: Any, ignored: bool = False) -> None:
        res = _field(result, "result") or {}
        event: dict[str, Any] = {
            "e": kind,
            "host": _field(result, "host").get_name(),
            "task": _field(result, "task").get_name(),
            "t": time.monotonic(),
        }
        for key in ("msg", "reason", "stdout", "stderr", "module_stderr"):
            if res.get(key):
                event["reason" if key == "reason" else key] = _text(res[key])
        if isinstance(res.get("rc"), int):
            event["rc"] = res["rc"]

        if ignored:
            event["ignored"] = True
        self._send(event)

    def v2_on_file_diff(self, result: Any) -> None:
        """Ansible calls this (before the result) with `--diff` or `diff: true`."""
        res = _field(result, "result") or {}
        diffs = [r.get("diff") for r in res.get("results") or () if isinstance(r, dict)]
        diffs = [d for d in [*diffs, res.get("diff")] if d]
        text = "".join(self._get_diff(d) for d in diffs)
        if text.strip():
            event = {"e": "diff", "host": _field(result, "host").get_name()}
            self._send({**event, "task": _field(result, "task").get_name(), "diff": _text(text)})

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._send({"e": "task", "task": task.get_name()})

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._send({"e": "task", "task": task.get_name(), "handler": True})

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        event = {"e": "start", "host": host.get_name(), "task": task.get_name()}
        self._send({**event, "t": time.monotonic()})

    def v2_runner_on_ok(self, result: Any) -> None:
        changed = bool((_field(result, "result") or {}).get("changed"))
        self._result("changed" if changed else "ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result("failed", result, ignored=ignore_errors)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result("unreachable", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result("skipped", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._send(
            {
                "e": "stats",
                "processed": sorted(stats.processed),
                "failures": sorted(stats.failures),
                "unreachable": sorted(stats.dark),
            }
        )
