"""`__main__` of the `kubectl-w5xde` zipapp: unpack once, then run the plugin.

Compiled dependencies (pydantic-core, PyYAML's C loader) cannot be imported from
inside a zip, so the archive unpacks itself into a cache folder named by its own
digest (`$XDG_CACHE_HOME/kubectl-w5xde/<digest>`), atomically, and runs from there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path


def unpacked(archive: Path) -> Path:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = cache / "kubectl-w5xde" / digest
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=target.parent))
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(scratch)
        try:
            scratch.rename(target)
        except OSError:  # another run unpacked it first
            shutil.rmtree(scratch, ignore_errors=True)
    return target


#: Written by `make plugin-zipapp`: the compiled dependencies are for this Python only.
BUILT_FOR = "PYTHON_VERSION"


def main() -> int:
    archive = Path(sys.argv[0]).resolve()
    with zipfile.ZipFile(archive) as bundle:
        wanted = bundle.read(BUILT_FOR).decode().strip() if BUILT_FOR in bundle.namelist() else ""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted and wanted != running:
        print(
            f"kubectl w5xde: this build needs python{wanted} as python3 (found {running});"
            " install it, or `pipx install w5xde`",
            file=sys.stderr,
        )
        return 1
    site = unpacked(archive)
    sys.path.insert(0, str(site))
    from w5xde.plugin.main import main as plugin_main

    return plugin_main()


if __name__ == "__main__":
    sys.exit(main())
