"""One-layer OCI image archives for the images nothing here can pull.

The sandbox ("pause") image and the CoreDNS image are a static binary each, built by
`make testbed-bin`; this writes them as an OCI image layout in a tar archive, the
format `ctr images import` reads, named by the `io.containerd.image.name` annotation.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class ImageFile:
    """A file of the image: its path inside the image and its content."""

    path: str
    data: bytes
    mode: int = 0o755


@dataclass(frozen=True)
class ImageSpec:
    name: str  # e.g. localhost/w5n-pause:v1.37.2
    files: tuple[ImageFile, ...]
    entrypoint: tuple[str, ...]
    user: str = "0"
    labels: dict[str, str] = field(default_factory=dict)


def _layer(files: tuple[ImageFile, ...]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories: set[str] = set()
        for item in files:
            parts = item.path.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size = len(item.data)
            info.mode = item.mode
            tar.addfile(info, io.BytesIO(item.data))
    return buffer.getvalue()


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }


def write_archive(spec: ImageSpec, path: Path) -> Path:
    """Write `spec` as an OCI archive at `path` (same input, same bytes)."""
    layer = _layer(spec.files)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": list(spec.entrypoint),
                "User": spec.user,
                "Labels": spec.labels,
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()],
            },
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": _descriptor(CONFIG, config),
            "layers": [_descriptor(LAYER, layer)],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    **_descriptor(MANIFEST, manifest),
                    "annotations": {
                        "io.containerd.image.name": spec.name,
                        "org.opencontainers.image.ref.name": spec.name.rsplit(":", 1)[1],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        entries += [
            (f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
            for blob in (layer, config, manifest)
        ]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path
