"""Docker components in the bundle and in `chimera-ops logs`: the private engine of the docker
tests, a real container that prints planted secrets."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.bundle.conftest import chimera as cli
from tests.bundle.conftest import extract, leaks
from tests.docker.conftest import Docker, docker, docker_host, poll  # noqa: F401 - fixtures


def test_container_logs_inspect_and_ps_redacted(docker: Docker, short_tmp: Path) -> None:  # noqa: F811
    env_secret, bearer, api_key = "envsecret-41f9c2", "bearer-77aa01", "apikey-5b5b5b"
    docker.run(
        "co-bundle",
        "-e",
        f"BITGET_API_SECRET={env_secret}",
        command=(
            f"echo 'order_id=ord-9 price=64123.50 size=0.01'; echo 'BITGET_API_KEY={api_key}'; "
            f"echo 'Authorization: Bearer {bearer}' >&2; exec sleep 1000000"
        ),
    )

    labels = [
        "--label",
        "com.docker.compose.project=cb",
        "--label",
        "com.docker.compose.service=api",
    ]
    docker.run("co-bundle-api", *labels, command="echo 'api ready on 8080'; exec sleep 1000000")

    def printed() -> bool:
        done = subprocess.run(
            ["docker", "-H", docker.host, "logs", "co-bundle"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        api = subprocess.run(
            ["docker", "-H", docker.host, "logs", "co-bundle-api"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return "Bearer" in done.stderr and "BITGET_API_KEY" in done.stdout and "ready" in api.stdout

    poll(printed, what="the container's output")
    config = short_tmp / "chimera-ops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "agent": {"state_dir": str(short_tmp / "var"), "docker": {"host": docker.host}},
                "components": {
                    "web": {"runtime": "docker", "container": "co-bundle"},
                    "api": {"runtime": "docker", "compose": {"project": "cb", "service": "api"}},
                },
            }
        )
    )
    done = cli(config, "collect-logs", "--out", str(short_tmp / "o"), "--json")
    assert done.returncode == 0, done.stderr
    root = extract(Path(json.loads(done.stdout)["bundle"]), short_tmp / "x")
    assert leaks(root, [env_secret, bearer, api_key]) == []
    log = (root / "logs/web/docker.log").read_text()
    assert "order_id=ord-9 price=64123.50 size=0.01" in log and "BITGET_API_KEY=***" in log
    inspect = json.loads((root / "docker/inspect-web.json").read_text())
    assert "BITGET_API_SECRET=***" in inspect["Config"]["Env"]
    api = json.loads((root / "docker/inspect-api.json").read_text())
    assert api["Name"] == "/co-bundle-api"  # found by its compose labels
    assert "api ready on 8080" in (root / "logs/api/docker.log").read_text()
    ps = json.loads((root / "docker/ps.json").read_text())
    assert any("/co-bundle" in (c["names"] or []) for c in ps)
    manifest = json.loads((root / "manifest.json").read_text())
    assert {c["name"]: c["status"] for c in manifest["collectors"]}["docker"] == "ok"
    assert "`web`: docker (container co-bundle)" in (root / "report.md").read_text()

    tail = cli(config, "logs", "web", "--tail", "2", "--json")
    assert tail.returncode == 0, tail.stdout + tail.stderr
    lines = json.loads(tail.stdout)["components"][0]["lines"]
    printed_lines = {
        "order_id=ord-9 price=64123.50 size=0.01",
        f"BITGET_API_KEY={api_key}",
        f"Authorization: Bearer {bearer}",
    }
    assert len(lines) == 2 and {line["text"] for line in lines} <= printed_lines
    assert all(line["ts"] and line["ts"].endswith("Z") for line in lines)
