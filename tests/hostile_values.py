"""Hostile values and the quoting contexts they are tried in, shared by the shell, local and
SSH tests (imported as `from hostile_values import ...`: tests/ is on sys.path)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path


def hostile(marker: Path) -> list[str]:
    """Values that would run `touch MARKER` if pasted into the command in some context."""
    m = str(marker)
    return [
        f"$(touch {m})",
        f"`touch {m}`",
        f"; touch {m}",
        f"| touch {m}",
        f"& touch {m}",
        f"\ntouch {m}\n",
        f"' ; touch {m} ; '",
        f'" ; touch {m} ; "',
        f"\\'; touch {m}; echo \\'",
        f'\\"; touch {m}; echo \\"',
        f"EOF\ntouch {m}\nEOF",
        "\\",
        "'",
        '"',
        "",
    ]


# (template, how the value shows in standard output)
CONTEXTS = [
    ("printf %s {p}", "{v}"),
    ('printf %s "dq:{p}"', "dq:{v}"),
    ("printf %s 'sq:{p}'", "sq:{v}"),
    ("printf %s x{p}y", "x{v}y"),
    ("X={p} sh -c 'printf %s \"$X\"'", "{v}"),
    ('printf %s "$(printf %s {p})"', "{vs}"),
    ('printf %s "a$(printf %s "in:{p}")b"', "ain:{vs}b"),
    ("printf %s {p}; printf %s {p}", "{v}{v}"),
    ("cat <<EOF\n{p}\nEOF", "{v}\n"),
    ("cat <<-EOF\n\tx{p}y\n\tEOF\necho after", "x{v}y\nafter\n"),
    ("printf %s {p} # a comment with {p}\necho ok", "{v}ok\n"),
    ("case {p} in *) printf %s {p};; esac", "{v}"),
    ('f() {{ printf %s "$1"; }}; f {p}', "{v}"),
    ("awk 'BEGIN {{ printf \"%s\", ARGV[1] }}' {p}", "{v}"),
]


# Rows of CONTEXTS whose value stays inside the shell (builtins, here-documents): a value of a
# megabyte fits there; handed to another program, one argument is limited to 128 KiB by Linux.
IN_SHELL = [row for row in CONTEXTS if "sh -c" not in row[0] and "awk" not in row[0]]
MEGABYTE = "x'\"$(y)" * 150_000


def expected_output(shown: str, value: str) -> str:
    """What the command of a CONTEXTS row prints for `value` (`{vs}`: command substitution
    strips trailing newlines)."""
    return shown.replace("{v}", value).replace("{vs}", value.rstrip("\n"))


def data_port_assembly(out_dir: Path, target: str = "") -> str:
    """A parameter read with env("MADEUS_HOSTILE") goes through a data port into commands
    that use it in each quoting context, each writing what arrived to a file in `out_dir`."""
    on = f" on {target}" if target else ""
    return f"""
component Source(value: str) {{
    places a*, b
    transition go: a -> b  shell "printf %s {{value}} > {out_dir}/param"
    provide data copy = "{{value}}" at b
}}
component Sink {{
    places a*, b
    transition go: a -> b  shell \"\"\"
        printf %s {{copy}} > {out_dir}/bare
        printf %s "{{copy}}" > {out_dir}/double
        printf %s '{{copy}}' > {out_dir}/single
        V={{copy}} sh -c 'printf %s "$V"' > {out_dir}/assignment
    \"\"\"
    use data copy for go
}}
assembly hostile {{
    source = Source(value = env("MADEUS_HOSTILE")){on}
    sink = Sink{on}
    connect sink.copy -> source.copy
}}
"""


DATA_PORT_FILES = ("param", "bare", "double", "single", "assignment")


@contextlib.contextmanager
def process_listings(every: float = 0.2) -> Iterator[list[str]]:
    """`ps axwwo args` taken every `every` seconds while the block runs (and once more at its
    end): what anyone on the machine could read of the command lines meanwhile."""
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while True:
            done = subprocess.run(["ps", "axwwo", "args"], capture_output=True, text=True)
            seen.append(done.stdout)
            if stop.wait(every):
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join()
