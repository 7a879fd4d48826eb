"""The small core every flow uses: git, schemas, paths, atomic writes, errors, progress, CLI."""
