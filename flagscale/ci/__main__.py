"""``python -m flagscale.ci``: the CI commands (see flagscale.ci.main)."""

from flagscale.ci.main import main

raise SystemExit(main())
