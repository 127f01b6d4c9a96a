"""The values an action may refer to as `{name}`: parameters, host facts and data ports.

Parameters are resolved once, before anything runs (an unset `env("X")` stops the run before it
starts). Secret parameters are kept apart so that every job can redact them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madeus.engine.errors import ParameterError
from madeus.errors import Diagnostic
from madeus.inventory import Host, Inventory
from madeus.model import ComponentType, EnvRef, Value, read_typed
from madeus.resolve import Deployment


@dataclass(frozen=True, slots=True)
class InstanceValues:
    params: Mapping[str, str]
    secrets: frozenset[str]  # the secret values themselves, for redaction
    secret_params: frozenset[str]  # names of secret parameters
    # Declared types of the parameters that are not text (int, float, bool), by name.
    types: Mapping[str, str] = field(default_factory=dict)


def to_text(value: object) -> str:
    """How a value reads in a command: booleans as shell-friendly `true`/`false`, structured
    inventory values as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


def resolve_params(deployment: Deployment, environ: Mapping[str, str]) -> dict[str, InstanceValues]:
    """Every instance's parameters as text; raise ParameterError naming each unset variable."""
    problems: list[Diagnostic] = []
    resolved: dict[str, InstanceValues] = {}
    for inst in deployment.instances:
        secret_names = frozenset(p.name for p in inst.component.params if p.secret)
        types = {p.name: p.type for p in inst.component.params if p.type in _TYPED}
        params: dict[str, str] = {}
        for name, value in inst.params.items():
            text = _param_text(value, environ)
            if text is None:
                assert isinstance(value, EnvRef)
                problems.append(
                    Diagnostic(
                        "unset-variable",
                        f'instance "{inst.name}": parameter "{name}" reads environment '
                        f'variable "{value.name}", which is not set',
                        inst.span,
                    )
                )
                continue
            kind = types.get(name)
            if kind is not None and isinstance(value, EnvRef) and not _fits(text, kind):
                problems.append(
                    Diagnostic(
                        "type-mismatch",
                        f'instance "{inst.name}": parameter "{name}" is {_ARTICLE[kind]}, '
                        f'but environment variable "{value.name}" holds {text!r}',
                        inst.span,
                    )
                )
                continue
            params[name] = text
        secrets = frozenset(params[n] for n in secret_names if params.get(n))
        resolved[inst.name] = InstanceValues(params, secrets, secret_names, types)
    if problems:
        raise ParameterError(problems)
    return resolved


_TYPED = ("int", "float", "bool")
_ARTICLE = {"int": "an int", "float": "a float", "bool": "a bool (true or false)"}


def _fits(text: str, kind: str) -> bool:
    """Whether an environment variable's text reads as the parameter's declared type."""
    try:
        read_typed(text, kind)
    except ValueError:
        return False
    return True


def _param_text(value: Value, environ: Mapping[str, str]) -> str | None:
    if isinstance(value, EnvRef):
        return environ.get(value.name)
    return to_text(value)


def data_value(
    template: str,
    instance: InstanceValues,
    facts: Mapping[str, str],
    used: Mapping[str, tuple[str, bool]],
) -> tuple[str, bool]:
    """The value of a data provide port written as a template, from the instance's parameters,
    the facts of its first host and the values of its own data use ports (`used`: port ->
    (value, secret)); and whether it is secret (it reads a secret parameter or a secret data
    value: then it is never journaled, and recomputed when needed). The one computation of
    both executors. MadeusError when a placeholder has no value."""
    from madeus.template import placeholders, render

    values = {**facts, **instance.params}
    values.update({port: value for port, (value, _) in used.items()})
    names = {name for name, _ in placeholders(template)}
    secret = bool(instance.secret_params & names) or any(
        secret and port in names for port, (_, secret) in used.items()
    )
    return render(template, values), secret


def action_dir(component: ComponentType) -> Path:
    """Where relative paths in a component's actions are read (an upload's source, a
    playbook, a Python module): the directory of its `.mad` file, absolute, so that no
    backend resolves it from a directory of its own."""
    span = component.span
    return (Path(span.path).parent if span.known else Path.cwd()).absolute()


def host_values(inventory: Inventory, host: Host) -> dict[str, str]:
    """`host.name`, `host.address` (how other hosts reach it) and `host.vars.KEY`."""
    merged: Mapping[str, Any] = (
        inventory.host_vars(host.name) if host.name in inventory.hosts else host.vars
    )
    values = {"host.name": host.name, "host.address": host.internal_address}
    values.update({f"host.vars.{k}": to_text(v) for k, v in merged.items()})
    return values
