"""Shared pytest wiring: the test bed's fixtures are a plugin so every tier can use them."""

pytest_plugins = ["testbed.fixtures"]
