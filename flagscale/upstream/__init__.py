"""Upstream backends: their declaration (backends/backends.yaml), sync to pins, release import."""
