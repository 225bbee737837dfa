"""``python -m procvault``."""

from procvault.cli import main

raise SystemExit(main())
