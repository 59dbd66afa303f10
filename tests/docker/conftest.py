"""A real Docker engine for the docker tests (never a mock of its API).

The session uses a private dockerd that already answers at $CHIMERA_TEST_DOCKER_HOST (or the
one `scripts/dev-dockerd.sh start` runs), else starts one through that script in its own dir
and stops it at the end. Images are never pulled: `chimera-busybox:test` is imported from a
rootfs made of the host's static busybox. Without docker.io or busybox-static the tests FAIL
with what to install (CI must not pass silently without the engine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "dev-dockerd.sh"
IMAGE = "chimera-busybox:test"
DEV_DIR = "/tmp/chimera-dockerd"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def _answers(host: str) -> bool:
    done = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        env={**os.environ, "DOCKER_HOST": host},
        capture_output=True,
        timeout=20,
    )
    return done.returncode == 0


def static_busybox() -> str:
    """A statically linked busybox (it runs in a rootfs with no libc)."""
    for path in BUSYBOX_CANDIDATES:
        if os.path.exists(path):
            out = subprocess.run(["file", "-L", path], capture_output=True, text=True).stdout
            if "statically linked" in out or "static-pie" in out or not shutil.which("file"):
                return path
    pytest.fail("a static busybox is required for the docker tests: apt-get install busybox-static")


def build_image(host: str, tag: str = IMAGE) -> None:
    """`docker import` of a rootfs with busybox and its applets (no registry, no pull)."""
    env = {**os.environ, "DOCKER_HOST": host}
    if (
        subprocess.run(["docker", "image", "inspect", tag], env=env, capture_output=True).returncode
        == 0
    ):
        return
    busybox = static_busybox()
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for sub in ("bin", "tmp", "www", "proc", "sys", "dev", "etc"):
            (root / sub).mkdir(parents=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        (root / "www" / "health").write_text("ok\n")
        archive = Path(tmp) / "root.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        subprocess.run(
            ["docker", "import", "-c", "ENV PATH=/bin", str(archive), tag],
            env=env,
            check=True,
            capture_output=True,
        )


def start_private_dockerd(directory: str) -> str:
    """Start a private dockerd in `directory` (through scripts/dev-dockerd.sh); its host URL."""
    if shutil.which("dockerd") is None:
        pytest.fail(
            "the docker tests need a real Docker engine: apt-get install docker.io "
            "(dockerd, containerd, runc); .ci/run installs it"
        )
    env = {**os.environ, "CHIMERA_DOCKERD_DIR": directory}
    done = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot start a private dockerd in {directory}: {done.stdout}{done.stderr}")
    return f"unix://{directory}/docker.sock"


def stop_private_dockerd(directory: str) -> None:
    env = {**os.environ, "CHIMERA_DOCKERD_DIR": directory}
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)


@dataclass
class Docker:
    """The docker CLI against one engine."""

    host: str

    def __call__(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["docker", *args],
            env={**os.environ, "DOCKER_HOST": self.host},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def run(self, name: str, *args: str, command: str = "exec sleep 1000000") -> str:
        """A detached container on the host network running `sh -c COMMAND`."""
        self("rm", "-f", name, check=False)
        return self(
            "run",
            "-d",
            "--pull",
            "never",
            "--name",
            name,
            "--network",
            "host",
            *args,
            IMAGE,
            "sh",
            "-c",
            command,
        )

    def inspect(self, name: str) -> dict[str, Any]:
        return json.loads(self("inspect", name))[0]  # type: ignore[no-any-return]

    def state(self, name: str) -> dict[str, Any]:
        return self.inspect(name)["State"]  # type: ignore[no-any-return]

    def rm(self, *names: str) -> None:
        if names:
            self("rm", "-f", *names, check=False)


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """A Docker engine for this session (an already running private one, or one started now)."""
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is required for the docker tests: apt-get install docker.io")
    configured = os.environ.get("CHIMERA_TEST_DOCKER_HOST")
    started: str | None = None
    if configured and _answers(configured):
        host = configured
    elif _answers(f"unix://{DEV_DIR}/docker.sock"):
        host = f"unix://{DEV_DIR}/docker.sock"
    else:
        started = tempfile.mkdtemp(prefix="cdk-", dir="/tmp")
        host = start_private_dockerd(started)
    build_image(host)
    yield host
    if started is not None:
        stop_private_dockerd(started)
        shutil.rmtree(started, ignore_errors=True)


@pytest.fixture
def docker(docker_host: str) -> Iterator[Docker]:
    """The docker CLI; containers a test names with `run` are removed afterwards."""
    client = Docker(docker_host)
    made: list[str] = []
    original = client.run

    def run(name: str, *args: str, command: str = "exec sleep 1000000") -> str:
        made.append(name)
        return original(name, *args, command=command)

    client.run = run  # type: ignore[method-assign]
    yield client
    client.rm(*made)


def poll(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll with a bound (no timing assertion: the bound only ends a hung test)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
