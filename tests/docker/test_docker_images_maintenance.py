"""`maintenance monthly`'s docker_images check on a real engine: images loaded with an old
creation time (a docker-save archive written here: no registry, no pull), one of them used by a
stopped container; `--dry-run` lists exactly the old unused one, `--fix --yes` removes exactly
it, like `docker image prune -a --filter until=720h` but never an image a container uses."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import yaml

from tests.docker.conftest import IMAGE, Docker
from tests.maintenance.test_maintenance import checks, cli

OLD = "2020-01-02T03:04:05Z"


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def load_image(docker: Docker, tmp: Path, tag: str, created: str) -> str:
    """`docker load` of a one-layer image created at `created`; returns its id."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        _add(tar, "marker", tag.encode())  # a different layer, so a different image, per tag
    layer_bytes = layer.getvalue()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Cmd": ["/marker"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"],
        },
        "history": [{"created": created}],
    }
    config_bytes = json.dumps(config).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{config_id}.json", "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]
    path = tmp / f"{tag.replace(':', '_')}.tar"
    with tarfile.open(path, "w") as archive:
        _add(archive, f"{config_id}.json", config_bytes)
        _add(archive, "layer/layer.tar", layer_bytes)
        _add(archive, "manifest.json", json.dumps(manifest).encode())
    docker("load", "-i", str(path))
    return f"sha256:{config_id}"


def write_config(tmp: Path, host: str) -> Path:
    config: dict[str, Any] = {
        "agent": {"state_dir": "./var", "docker": {"host": host}},
        "components": {"web": {"runtime": "docker", "container": "mnt-web"}},
        "maintenance": {"system_logs": False},
    }
    path = tmp / "chimera-ops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_old_unused_images_are_listed_then_removed_and_used_ones_kept(
    docker: Docker, docker_host: str, tmp_path: Path
) -> None:
    unused = load_image(docker, tmp_path, "chimera-old-unused:1", OLD)
    used = load_image(docker, tmp_path, "chimera-old-used:1", OLD)
    docker("rm", "-f", "mnt-holder", check=False)
    docker("create", "--name", "mnt-holder", "chimera-old-used:1")  # stopped, still a user
    try:
        config = write_config(tmp_path, docker_host)
        done = cli(config, "monthly", "--only", "docker_images", "--dry-run", "--json")
        found = checks(done)["docker_images"]
        assert found["status"] == "warning", found
        assert found["data"]["unused"] == [["chimera-old-unused:1"]]
        assert docker("image", "inspect", "--format", "{{.Id}}", unused) == unused

        done = cli(config, "monthly", "--only", "docker_images", "--fix", "--yes", "--json")
        found = checks(done)["docker_images"]
        assert found["data"]["removed"] == [unused] and found["status"] == "ok"
        assert docker("image", "inspect", unused, check=False) == "[]"
        assert docker("image", "inspect", "--format", "{{.Id}}", used) == used
        assert docker("image", "inspect", "--format", "{{.Id}}", IMAGE)  # new: kept

        found = checks(cli(config, "monthly", "--only", "docker_images", "--json"))
        assert found["docker_images"]["status"] == "ok"
        assert found["docker_images"]["value"] == "none"
    finally:
        docker("rm", "-f", "mnt-holder", check=False)
        docker("rmi", "-f", "chimera-old-used:1", "chimera-old-unused:1", check=False)
