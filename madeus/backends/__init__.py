"""Backends run one action of one transition on one host. See `base.Backend`."""
