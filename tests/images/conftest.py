"""The images tier needs the images `make images` built; without them it says so."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from images.containers import image_ref, podman


@pytest.fixture(scope="session")
def image_config() -> dict[str, dict[str, Any]]:
    """`podman image inspect` of both images, keyed by kind; fails if one is missing."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run `make images` (it installs the tools)")
    configs = {}
    for kind in ("worker", "operator"):
        result = podman("image", "inspect", image_ref(kind))
        if result.returncode != 0:
            pytest.fail(f"image {image_ref(kind)} is missing: run `make images` first")
        configs[kind] = json.loads(result.stdout)[0]
    return configs
