"""`python -m madeus.backends.ansible_cli playbook|adhoc ARGS...`: Ansible's own command line
(`ansible-playbook`, `ansible`), with its extra variables read from standard input.

Extra variables hold parameter values, secrets among them. On the command line they would show
in `ps`; in a file they would sit on disk (and `-e @/dev/fd/N` does not work: Ansible resolves
the path with realpath, which names no file for an in-memory one). So madeus writes them, as
one YAML mapping, on this process's standard input, and this shim hands them to Ansible's
command line class in memory: they are part of no argv any process was started with. Standard
input is /dev/null afterwards. Nothing else differs from running the Ansible command.

Run by the Ansible backend only; it imports ansible, which madeus itself never does.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("playbook", "adhoc"):
        sys.exit("usage: python -m madeus.backends.ansible_cli playbook|adhoc ARGS...")
    extra = sys.stdin.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    args = [f"ansible-{argv[0]}" if argv[0] == "playbook" else "ansible", *argv[1:]]
    if extra.strip():
        args += ["-e", extra]
    if argv[0] == "playbook":
        from ansible.cli.playbook import main as run
    else:
        from ansible.cli.adhoc import main as run
    run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
