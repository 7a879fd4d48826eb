"""Adoption: bringing FlagScale's existing tools/patch data into this workspace."""
