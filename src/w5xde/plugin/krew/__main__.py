"""`python -P -m w5xde.plugin.krew check | render VERSION SHA256`: the krew manifest."""

from __future__ import annotations

import argparse
import re
import sys
from importlib import resources
from typing import Any

import yaml

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
#: What kubectl looks for on PATH for `kubectl w5xde`, and pyproject's console script.
BINARY = "kubectl-w5xde"
PLACEHOLDERS = ("{{VERSION}}", "{{SHA256_LINUX_AMD64}}")


def template() -> str:
    return resources.files("w5xde.plugin.krew").joinpath("w5xde.yaml").read_text()


def problems(text: str) -> list[str]:
    """What krew would refuse (or what would not find the binary), as sentences."""
    found: list[str] = []
    for placeholder in PLACEHOLDERS:
        if placeholder not in text:
            found.append(f"the template lacks {placeholder}")
    manifest: Any = yaml.safe_load(text.replace("{{VERSION}}", "0.0.0"))
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != "Plugin":
        found.append(f"apiVersion/kind must be {API_VERSION} Plugin")
    if (manifest.get("metadata") or {}).get("name") != "w5xde":
        found.append("metadata.name must be w5xde (kubectl w5xde)")
    spec = manifest.get("spec") or {}
    if not re.fullmatch(r"v\d+\.\d+\.\d+", str(spec.get("version", ""))):
        found.append("spec.version must be v<semver>")
    for key in ("homepage", "shortDescription", "description"):
        if not spec.get(key):
            found.append(f"spec.{key} is required")
    if len(str(spec.get("shortDescription", ""))) > 64:
        found.append("spec.shortDescription is longer than krew's 64 characters")
    platforms = spec.get("platforms") or []
    if not platforms:
        found.append("spec.platforms is empty")
    for index, platform in enumerate(platforms):
        where = f"spec.platforms[{index}]"
        if platform.get("bin") != BINARY:
            found.append(f"{where}.bin must be {BINARY}")
        if not str(platform.get("uri", "")).startswith("https://"):
            found.append(f"{where}.uri must be https")
        if not (platform.get("selector") or {}).get("matchLabels"):
            found.append(f"{where}.selector.matchLabels is required")
        if BINARY not in [item.get("from") for item in platform.get("files") or []]:
            found.append(f"{where}.files must copy {BINARY}")
    return found


def render(version: str, sha256: str) -> str:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise ValueError(f"version {version!r} is not x.y.z")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("sha256 must be 64 hex digits")
    text = template().replace("{{VERSION}}", version).replace("{{SHA256_LINUX_AMD64}}", sha256)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -P -m w5xde.plugin.krew", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate the manifest template")
    rendering = commands.add_parser("render", help="print the manifest for a release")
    rendering.add_argument("version")
    rendering.add_argument("sha256")
    args = parser.parse_args(argv)
    if args.command == "check":
        found = problems(template())
        for problem in found:
            print(f"krew manifest: {problem}", file=sys.stderr)
        return 1 if found else 0
    try:
        sys.stdout.write(render(args.version, args.sha256))
    except ValueError as error:
        print(f"krew render: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
