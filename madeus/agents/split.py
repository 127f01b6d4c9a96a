"""Who runs what: the agent of each site, and the party (the controller or one agent) that runs
each transition of a compiled program.

An instance is run by its site's agent when all its hosts are in that site and every action of
its transitions can run there (shell commands, none, or a simulated sleep); otherwise, by the
controller (Python actions run in the controller's process, Ansible actions need its
`ansible-playbook`, an upload reads a file on its disk). An instance is never split between
parties, so the party that runs it computes its data values, and the only things that travel
are the ends of transitions another party waits for, and the data values it uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from madeus.engine.program import Program
from madeus.errors import MadeusError
from madeus.inventory import Host, Inventory
from madeus.model import AnsibleAction, PythonAction, UploadAction

CONTROLLER = -1
AGENT_VAR = "madeus_agent"
# Actions that need the controller: Python runs in its process, Ansible with its
# ansible-playbook, an upload reads a file on its disk.
_CONTROLLER_ACTIONS = (PythonAction, AnsibleAction, UploadAction)


@dataclass(frozen=True, slots=True)
class AgentSite:
    name: str  # the site
    host: Host  # where its agent runs
    hosts: frozenset[str]  # the site's hosts the program uses


@dataclass(frozen=True, slots=True)
class Split:
    sites: tuple[AgentSite, ...]  # one per agent, agent k is sites[k]
    owner: tuple[int, ...]  # per transition index: CONTROLLER or an agent
    instances: tuple[frozenset[str], ...]  # per agent: the instances it runs
    # per agent: the transitions of other parties whose end it waits for
    needs: tuple[frozenset[int], ...]
    # per transition an agent runs: those of other parties it waits for
    waits: Mapping[int, tuple[int, ...]]
    # per agent: the data values (instance, port) of other parties' instances it uses
    data_needs: tuple[frozenset[tuple[str, str]], ...]

    def slots(self, k: int) -> list[int]:
        return [i for i, o in enumerate(self.owner) if o == k]


def agent_sites(inventory: Inventory, used: Mapping[str, Host]) -> list[AgentSite]:
    """One agent per site among the `used` hosts (name -> host): on the site's host with
    `madeus_agent: true` (used by the run or not), else on its first used host. A site of hosts
    on this machine (connection local) gets none: the controller is already there."""
    found: list[AgentSite] = []
    for site, names in inventory.sites.items():
        hosts = [used[n] for n in names if n in used]
        remote = [h for h in hosts if not h.local]
        if not remote:
            continue
        chosen = [
            h
            for n in names
            for h in (used.get(n) or inventory.hosts[n],)
            if not h.local and _truthy(h.vars.get(AGENT_VAR))
        ]
        if len(chosen) > 1:
            raise MadeusError(
                f'site "{site}": {AGENT_VAR} is true on more than one host '
                f"({', '.join(h.name for h in chosen)}): a site has one agent"
            )
        agent = chosen[0] if chosen else remote[0]
        found.append(AgentSite(site, agent, frozenset(h.name for h in hosts)))
    return found


def split(program: Program, sites: list[AgentSite], *, simulated: bool) -> Split:
    """Assign every transition of `program` to a party (see the module's docstring)."""
    site_of: dict[str, int] = {}
    for k, site in enumerate(sites):
        for name in site.hosts:
            site_of[name] = k
    # Per instance: the one agent that can run all of it, or the controller.
    party: dict[str, int] = {}
    for i, instance in enumerate(program.instance_of):
        current = party.get(instance)
        if current == CONTROLLER:
            continue
        action = program.transitions[i].action
        hosts = {
            site_of.get(program.hosts[program.job_host[j]].name, CONTROLLER)
            for j in _jobs(program, i)
        }
        runnable = simulated or not isinstance(action, _CONTROLLER_ACTIONS)
        here = hosts.pop() if len(hosts) == 1 and runnable else CONTROLLER
        party[instance] = here if current is None or current == here else CONTROLLER
    owner = tuple(party.get(instance, CONTROLLER) for instance in program.instance_of)
    preds: list[set[int]] = [set() for _ in owner]
    for i in range(len(owner)):
        for s in program.and_succ[i]:
            preds[s].add(i)
        for a in program.alt_succ[i]:
            preds[program.slot_owner[program.alt_slot[a]]].add(i)
    needs: list[set[int]] = [set() for _ in sites]
    waits: dict[int, tuple[int, ...]] = {}
    for s, k in enumerate(owner):
        if k != CONTROLLER:
            foreign = tuple(sorted(i for i in preds[s] if owner[i] != k))
            if foreign:
                waits[s] = foreign
                needs[k].update(foreign)
    instances = [{n for n, k2 in party.items() if k2 == k} for k in range(len(sites))]
    data_needs: list[set[tuple[str, str]]] = [set() for _ in sites]
    for k, mine in enumerate(instances):
        for instance in mine:
            for use in program.data_uses.get(instance, ()):
                if use.provider not in mine:
                    data_needs[k].add((use.provider, use.provider_port))
    return Split(
        tuple(sites),
        owner,
        tuple(frozenset(x) for x in instances),
        tuple(frozenset(x) for x in needs),
        waits,
        tuple(frozenset(x) for x in data_needs),
    )


def _jobs(program: Program, i: int) -> range:
    return range(program.job_base[i], program.job_base[i + 1])


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "on")
    return bool(value)


def wanted(
    program: Program, inventory: Inventory, *, agents: bool, simulated: bool
) -> Split | None:
    """The run's split when it uses agents (`agents`, or a host of the inventory with
    `madeus_agent: true`) and some site has something to run; else None."""
    used = {h.name: h for h in program.hosts}
    if not agents and not any(_truthy(h.vars.get(AGENT_VAR)) for h in used.values()):
        return None
    sites = agent_sites(inventory, used)
    parts = split(program, sites, simulated=simulated)
    return parts if any(k != CONTROLLER for k in parts.owner) else None
