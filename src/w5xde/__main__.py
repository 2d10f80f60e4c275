"""`python -m w5xde` is the same as the `w5xde` console script."""

from w5xde.cli import main

raise SystemExit(main())
