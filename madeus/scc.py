"""Strongly connected components (Tarjan's algorithm), over nodes numbered 0..size-1: one
implementation for every graph that needs them (a lifecycle's places in the front end's
checks, the verifier's wait graph)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


def strongly_connected(
    size: int, successors: Callable[[int], Sequence[int]], among: Iterable[int] | None = None
) -> list[list[int]]:
    """Tarjan's algorithm, iterative (deployments have 100,000s of nodes: no recursion).
    Components come out successors first: when edges point from a node to what it waits
    for, every component comes after the components it waits on."""
    index = [-1] * size
    low = [0] * size
    on_stack = bytearray(size)
    stack: list[int] = []
    result: list[list[int]] = []
    counter = 0
    for root in range(size) if among is None else among:
        if index[root] != -1:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = 1
        while work:
            node, position = work[-1]
            succ = successors(node)
            if position < len(succ):
                work[-1] = (node, position + 1)
                nxt = succ[position]
                if index[nxt] == -1:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack[nxt] = 1
                    work.append((nxt, 0))
                elif on_stack[nxt] and index[nxt] < low[node]:
                    low[node] = index[nxt]
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                if low[node] < low[parent]:
                    low[parent] = low[node]
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack[member] = 0
                    component.append(member)
                    if member == node:
                        break
                result.append(component)
    return result


def is_cyclic(component: Sequence[int], successors: Callable[[int], Sequence[int]]) -> bool:
    return len(component) > 1 or component[0] in successors(component[0])
