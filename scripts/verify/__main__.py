"""`python -m scripts.verify`: see scripts/verify/cli.py."""

from scripts.verify.cli import main

raise SystemExit(main())
