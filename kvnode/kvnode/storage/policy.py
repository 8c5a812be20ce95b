"""Durability policies (a light module: the CLI imports it to build `--help`)."""

FSYNC_POLICIES = ("always", "group")
