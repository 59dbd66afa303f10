"""The docker runtime (issue 10), side by side in one run on the same containers:

(a) an unhealthy container until a new one is healthy: chimera-ops, docker-autoheal (its shell
    loop transcribed with its defaults: list unhealthy `autoheal=true` containers, POST
    /containers/ID/restart?t=10, sleep 5 s) and Docker alone (restart: always, which never
    restarts an unhealthy container);
(b) a container that dies (SIGKILL of its process from the host: a crash): chimera-ops against
    Docker's own restart policy (`restart: always`);
(c) CPU and RSS of the agent watching 10 containers, against the autoheal loop's CPU.

Times come from the engine's own event stream (`health_status`, `kill`, `die`, `start`), so
every watcher is measured by the same clock. A private dockerd is used (scripts/dev-dockerd.sh);
images are imported from a busybox rootfs, never pulled. Writes bench/results/docker.md; exits 2
when no engine can be had.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import yaml  # noqa: E402
from _common import PY, REPO, Section, end_process, fmt, median, mib, verdict, write_results  # noqa: E402

from tests.docker.conftest import IMAGE, build_image, start_private_dockerd  # noqa: E402

DEV_DIR = "/tmp/chimera-dockerd"
RUNS = 3
HEALTH = ["--health-cmd", "test -f /tmp/ok", "--health-interval", "1s", "--health-retries", "1"]
COMMAND = "trap 'exit 0' TERM; touch /tmp/ok; while :; do sleep 0.1; done"
AUTOHEAL = r"""
# docker-autoheal's docker-entrypoint loop with its defaults (AUTOHEAL_CONTAINER_LABEL=autoheal,
# AUTOHEAL_INTERVAL=5, AUTOHEAL_START_PERIOD=0, AUTOHEAL_DEFAULT_STOP_TIMEOUT=10), transcribed.
SOCK="$1"
docker_curl() { curl --max-time 30 --no-buffer -s --unix-socket "$SOCK" "$@"; }
while true; do
  docker_curl -G --data-urlencode 'filters={"health":["unhealthy"],"label":["autoheal=true"]}' \
    http://localhost/containers/json | jq -r '.[] | .Id' | while read -r id; do
      echo "$(date +%s) restarting $id"
      docker_curl -f -XPOST "http://localhost/containers/$id/restart?t=10" >/dev/null
    done
  sleep 5
done
"""


class Events:
    """The engine's container events, timestamped on arrival, in a thread."""

    def __init__(self, host: str) -> None:
        import docker

        self.client = docker.DockerClient(base_url=host)
        self.items: list[tuple[float, str, str]] = []  # (time, container name, action)
        self._stream = self.client.api.events(decode=True, filters={"type": "container"})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
                self.items.append((time.time(), name, str(event.get("Action", ""))))
        except Exception:  # noqa: BLE001, S110 - closed at the end
            pass

    def first(self, name: str, prefix: tuple[str, ...], after: float, timeout: float) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for at, who, action in list(self.items):
                if who == name and at >= after and action.startswith(prefix):
                    return at
            time.sleep(0.01)
        return float("nan")

    def close(self) -> None:
        self._stream.close()


def docker(host: str, *args: str) -> str:
    done = subprocess.run(
        ["docker", *args], env={**os.environ, "DOCKER_HOST": host}, capture_output=True, text=True
    )
    return done.stdout.strip()


def run_container(host: str, name: str, *args: str) -> None:
    docker(host, "rm", "-f", name)
    docker(host, "run", "-d", "--pull", "never", "--name", name, "--network", "host", *args,
           IMAGE, "sh", "-c", COMMAND)  # fmt: skip


def wait_healthy(events: Events, host: str, name: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if docker(host, "inspect", "-f", "{{.State.Health.Status}}", name) == "healthy":
            return
        time.sleep(0.1)


def start_agent(
    tmp: Path, host: str, names: list[str], **component: Any
) -> subprocess.Popen[bytes]:
    config = {
        "agent": {"state_dir": str(tmp / "var"), "docker": {"host": host}},
        "components": {
            n.replace("_", "-"): {"runtime": "docker", "container": n, **component} for n in names
        },
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "chimera-ops.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(tmp / "agent.out", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [PY, "-m", "chimera_ops", "--config", str(path), "agent"], stdout=log, stderr=log, cwd=REPO
    )
    deadline = time.time() + 20
    while time.time() < deadline and not (tmp / "var" / "agent.sock").exists():
        time.sleep(0.05)
    return proc


def unhealthy_trials(events: Events, host: str, name: str) -> list[tuple[float, float]]:
    """RUNS times: make it unhealthy; (unhealthy -> restart begun, unhealthy -> healthy again)."""
    out = []
    for _ in range(RUNS):
        wait_healthy(events, host, name)
        time.sleep(1.0)
        mark = time.time()
        docker(host, "exec", name, "rm", "/tmp/ok")
        t0 = events.first(name, ("health_status: unhealthy",), mark, 20)
        t1 = events.first(name, ("kill", "stop"), t0, 30)
        t2 = events.first(name, ("health_status: healthy",), t1, 30)
        out.append((t1 - t0, t2 - t0))
        print(f"  {name}: restart begun {t1 - t0:.3f} s, healthy {t2 - t0:.2f} s", flush=True)
    return out


def die_trials(events: Events, host: str, name: str) -> list[float]:
    """RUNS times: SIGKILL its process from the host; die -> healthy again."""
    out = []
    for _ in range(RUNS):
        wait_healthy(events, host, name)
        time.sleep(11.0)  # past Docker's 10 s "ran long enough" reset of its restart delay
        pid = int(docker(host, "inspect", "-f", "{{.State.Pid}}", name))
        mark = time.time()
        os.kill(pid, signal.SIGKILL)
        t0 = events.first(name, ("die",), mark, 10)
        t1 = events.first(name, ("health_status: healthy",), t0, 60)
        out.append(t1 - t0)
        print(f"  {name}: die -> healthy {t1 - t0:.2f} s", flush=True)
    return out


def cpu_of(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def usage_over(
    proc: subprocess.Popen[bytes], settle: float, seconds: float = 30.0
) -> tuple[float, int]:
    """(CPU as a fraction of one core, RSS) of `proc` (children included) over `seconds`."""
    time.sleep(settle)
    watched = psutil.Process(proc.pid)
    c0, w0 = cpu_of(watched), time.monotonic()
    time.sleep(seconds)
    return (cpu_of(watched) - c0) / (time.monotonic() - w0), watched.memory_info().rss


def main() -> int:
    host = f"unix://{DEV_DIR}/docker.sock"
    if docker(host, "version", "--format", "{{.Server.Version}}") == "":
        host = start_private_dockerd(tempfile.mkdtemp(prefix="cdk-bench-", dir="/tmp"))
    build_image(host)
    events = Events(host)
    tmp = Path(tempfile.mkdtemp(prefix="cb-", dir="/tmp"))
    sections: list[Section] = []
    rows_a: list[list[str]] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print("(a) unhealthy", flush=True)
        run_container(host, "cb_unh", *HEALTH, "--label", "autoheal=true", "--restart", "always")
        agent = start_agent(tmp / "a", host, ["cb_unh"], liveness={"docker_health": {}},
                            stop={"grace": "10s"})  # fmt: skip
        procs.append(agent)
        ours = unhealthy_trials(events, host, "cb_unh")
        end_process(agent)
        autoheal = subprocess.Popen(["sh", "-c", AUTOHEAL, "autoheal", host[len("unix://") :]])
        procs.append(autoheal)
        theirs = unhealthy_trials(events, host, "cb_unh")
        end_process(autoheal)
        wait_healthy(events, host, "cb_unh")
        mark = time.time()
        docker(host, "exec", "cb_unh", "rm", "/tmp/ok")
        t0 = events.first("cb_unh", ("health_status: unhealthy",), mark, 20)
        alone = events.first("cb_unh", ("kill", "stop", "restart"), t0, 20)
        for label, trials in (("chimera-ops", ours), ("docker-autoheal (5 s loop)", theirs)):
            rows_a.append([
                label,
                fmt(median([a for a, _ in trials]), 3, " s"),
                fmt(max(a for a, _ in trials), 3, " s"),
                fmt(median([b for _, b in trials]), 2, " s"),
            ])  # fmt: skip
        rows_a.append(["Docker alone (restart: always)",
                       "never" if alone != alone else fmt(alone - t0, 2, " s"),
                       "-", "never (still unhealthy after 20 s)"])  # fmt: skip
        begun = median([a for a, _ in ours])
        sections.append(
            Section(
                "(a) unhealthy -> restart begun -> healthy again",
                "unhealthy-to-restart-begun <= 0.2 s after Docker's health_status event",
                [
                    "watcher",
                    "restart begun (median)",
                    "restart begun (max)",
                    "healthy again (median)",
                ],
                rows_a,
                verdict(begun <= 0.2),
                [
                    f"{RUNS} runs each; healthcheck every 1 s, 1 retry; the container stops on "
                    "SIGTERM at once, so `t=10` / `stop.grace: 10s` do not add their 10 s",
                    "restart begun = the engine's `kill` event of the restart; times from the "
                    "engine's own event stream",
                ],
            )  # fmt: skip
        )

        print("(b) die", flush=True)
        docker(host, "rm", "-f", "cb_unh")
        run_container(host, "cb_die", *HEALTH)
        agent = start_agent(tmp / "b", host, ["cb_die"], restart={"policy": "always",
                            "backoff": {"reset_after": "10s"}})  # fmt: skip
        procs.append(agent)
        ours_die = die_trials(events, host, "cb_die")
        end_process(agent)
        docker(host, "update", "--restart", "always", "cb_die")
        docker_die = die_trials(events, host, "cb_die")
        m_ours, m_docker = median(ours_die), median(docker_die)
        sections.append(
            Section(
                "(b) a container dies (SIGKILL of its process) -> healthy again",
                "die-to-healthy no slower than Docker's own restart policy",
                ["restarted by", "die -> healthy (median)", "max"],
                [
                    [
                        "chimera-ops (restart.policy: always)",
                        fmt(m_ours, 2, " s"),
                        fmt(max(ours_die), 2, " s"),
                    ],
                    [
                        "Docker (restart: always)",
                        fmt(m_docker, 2, " s"),
                        fmt(max(docker_die), 2, " s"),
                    ],
                ],
                verdict(m_ours <= m_docker + 0.1),
                [
                    f"{RUNS} runs each, 11 s of uptime before each kill (Docker resets its restart "
                    "delay after 10 s; the agent's backoff.reset_after is set to 10 s to match)",
                    "healthy again = Docker's `health_status: healthy` (checks every 1 s), which "
                    "dominates both figures",
                ],
            )  # fmt: skip
        )
        docker(host, "rm", "-f", "cb_die")

        print("(c) 10 containers", flush=True)
        names = [f"cb_ten_{i}" for i in range(10)]
        for n in names:
            run_container(host, n, *HEALTH, "--label", "autoheal=true")
        agent = start_agent(tmp / "c", host, names, liveness={"docker_health": {}})
        procs.append(agent)
        agent_cpu, agent_rss = usage_over(agent, settle=10.0)
        end_process(agent)
        autoheal = subprocess.Popen(["sh", "-c", AUTOHEAL, "autoheal", host[len("unix://") :]])
        procs.append(autoheal)
        auto_cpu, auto_rss = usage_over(autoheal, settle=1.0)
        end_process(autoheal)
        sections.append(
            Section(
                "(c) watching 10 healthy containers for 30 s",
                "agent CPU <= the autoheal loop's",
                ["watcher", "CPU (% of one core)", "RSS"],
                [
                    ["chimera-ops agent", fmt(agent_cpu * 100, 2, " %"), mib(agent_rss)],
                    [
                        "docker-autoheal loop (sh + curl + jq)",
                        fmt(auto_cpu * 100, 2, " %"),
                        mib(auto_rss) + " (the shell alone)",
                    ],
                ],
                verdict(agent_cpu <= auto_cpu),
                [
                    "each container's HEALTHCHECK runs every 1 s; the engine sends a "
                    "health_status event only on a change, so a healthy stack sends none",
                    "the agent's CPU includes its docker_health probes (no API call while Docker "
                    "says healthy: the status comes from its events) and its event thread; "
                    "autoheal's includes its curl and jq children",
                ],
            )  # fmt: skip
        )
        for n in names:
            docker(host, "rm", "-f", n)
    finally:
        for proc in procs:
            end_process(proc)
        events.close()
    write_results(
        "docker",
        "Docker runtime: chimera-ops vs docker-autoheal vs Docker alone",
        __doc__.strip().splitlines()[0] if __doc__ else "",
        sections,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
