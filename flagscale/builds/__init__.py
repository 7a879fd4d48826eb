"""Isolated builds per device type: plan, assemble, fingerprint, lock and swap, the command."""
