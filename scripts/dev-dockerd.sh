#!/usr/bin/env bash
# A private Docker engine for development and tests: its own socket, data root and exec root,
# no iptables, no bridge (containers use --network host), the vfs storage driver (works in any
# sandbox, no overlay mounts). Nothing touches a system dockerd.
#
#   scripts/dev-dockerd.sh start    # prints the DOCKER_HOST to export
#   scripts/dev-dockerd.sh stop
#   scripts/dev-dockerd.sh status
#
# CHIMERA_DOCKERD_DIR (default /tmp/chimera-dockerd) holds everything: docker.sock, data/,
# exec/, docker.pid, dockerd.log.
set -euo pipefail
DIR="${CHIMERA_DOCKERD_DIR:-/tmp/chimera-dockerd}"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/docker.pid"
export DOCKER_HOST="unix://$SOCK"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-start}" in
  start)
    if ! command -v dockerd >/dev/null; then
      echo "dockerd not found: apt-get install docker.io" >&2
      exit 1
    fi
    mkdir -p "$DIR/data" "$DIR/exec"
    if running && docker version >/dev/null 2>&1; then
      echo "already running (pid $(cat "$PIDFILE")); export DOCKER_HOST=$DOCKER_HOST"
      exit 0
    fi
    rm -f "$SOCK" "$PIDFILE"
    # After a kill -9 of dockerd its containerd can be left as a zombie (a sandbox's pid 1 may
    # not reap): dockerd then takes the stale containerd.pid for a live containerd and waits
    # for it until it times out. A pid file whose process is not a live containerd goes.
    cpid_file="$DIR/exec/containerd/containerd.pid"
    if [ -f "$cpid_file" ]; then
      cpid="$(cat "$cpid_file")"
      if ! { tr '\0' ' ' <"/proc/$cpid/cmdline"; } 2>/dev/null | grep -q containerd; then
        rm -f "$cpid_file"
      fi
    fi
    nohup dockerd --iptables=false --bridge=none --storage-driver=vfs \
      --host "$DOCKER_HOST" --data-root "$DIR/data" --exec-root "$DIR/exec" \
      --pidfile "$PIDFILE" >>"$DIR/dockerd.log" 2>&1 &
    for _ in $(seq 1 100); do
      docker version >/dev/null 2>&1 && break
      sleep 0.2
    done
    if ! docker version >/dev/null 2>&1; then
      echo "dockerd did not answer on $SOCK; see $DIR/dockerd.log" >&2
      tail -n 20 "$DIR/dockerd.log" >&2 || true
      exit 1
    fi
    echo "dockerd running (pid $(cat "$PIDFILE")); export DOCKER_HOST=$DOCKER_HOST"
    ;;
  stop)
    if running; then
      pid="$(cat "$PIDFILE")"
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      echo "dockerd stopped"
    else
      echo "not running"
    fi
    ;;
  status)
    if running; then echo "running (pid $(cat "$PIDFILE")); DOCKER_HOST=$DOCKER_HOST"; else echo "not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
