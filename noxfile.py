"""`nox` runs lint, typecheck, tests, and the Ansible tests with ansible-core 2.17 and the
front end's with lark 1.1.9 (`ansible217`); `nox -s tests -- -k engine` passes pytest
arguments."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "ansible217"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", "madeus")


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-q", "--durations=15"]))


@nox.session
def ansible217(session: nox.Session) -> None:
    """The Ansible tests again with `madeus[kolla]`: Kolla-Ansible 19.8.0 installed, with the
    ansible-core it requires (2.17)."""
    session.install("-e", ".[test,kolla]", "ansible-core>=2.17,<2.18")
    tests = ["tests/test_ansible_fidelity.py", "tests/test_backends_ansible.py"]
    tests += ["tests/test_kolla_fidelity.py", "tests/test_ansible_refs.py"]
    session.run("pytest", "-q", *tests, "tests/test_cli_habits.py", *session.posargs)
    # This environment is the one with older libraries: the front end with the oldest lark
    # pyproject.toml accepts, too.
    session.install("lark==1.1.9")
    session.run("pytest", "-q", "tests/test_frontend.py", "tests/test_checks.py")
