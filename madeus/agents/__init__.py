"""Site agents: each site runs its own part of a run (see docs/agents.md)."""
