"""Shared pytest wiring.

- The test bed's fixtures are a plugin so every tier can use them.
- `skip_allowlist`: a skip for a reason not in `tests/allowed_skips.txt` fails the
  session.
- `pytester` runs pytest inside a test (the allowlist's own test).
"""

pytest_plugins = ["testbed.fixtures", "skip_allowlist", "pytester"]
