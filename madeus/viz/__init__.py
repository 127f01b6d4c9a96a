"""Drawings: graphviz views of an assembly, its Petri net, its plan, a component type.

`draw(deployment, view, out_path)` writes `.dot` text (no graphviz needed) or renders `.svg` /
`.png` with the `dot` program. Importing this package is cheap: nothing heavy at module level.
"""

from __future__ import annotations

from madeus.viz.graphs import FORMATS, VIEWS, Highlight, draw, parse_view, to_dot

__all__ = ["FORMATS", "VIEWS", "Highlight", "draw", "parse_view", "to_dot"]
