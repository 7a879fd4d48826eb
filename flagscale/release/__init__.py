"""Releases: signed bundles of patch sets, and the compatibility matrix."""
