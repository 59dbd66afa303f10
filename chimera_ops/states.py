"""Component states and their allowed transitions (supervisor's states plus health). Stdlib only."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Where a component is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FATAL = "fatal"
    UNKNOWN = "unknown"


# The states in which the component's process exists (or, for external, is being watched).
ALIVE_STATES = frozenset({State.STARTING, State.RUNNING, State.UNHEALTHY, State.STOPPING})

# Where a component that is up (running or unhealthy) may go, besides between those two.
_LEAVING_UP = frozenset(
    {State.STOPPING, State.EXITED, State.BACKOFF, State.FATAL, State.STOPPED, State.UNKNOWN}
)

# From -> allowed next states. Anything else is a bug in the caller, not an operator error.
# `unknown` is reachable from every live state: a container's engine can vanish at any moment.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.UNKNOWN: frozenset(State),
    State.STOPPED: frozenset(
        {State.STARTING, State.FATAL, State.STOPPED, State.RUNNING, State.UNHEALTHY, State.UNKNOWN}
    ),
    State.STARTING: frozenset(
        {
            State.RUNNING,
            State.UNHEALTHY,
            State.BACKOFF,
            State.STOPPING,
            State.EXITED,
            State.FATAL,
            State.STOPPED,  # an external component no longer watched
            State.UNKNOWN,
        }
    ),
    State.RUNNING: _LEAVING_UP | {State.UNHEALTHY},
    State.UNHEALTHY: _LEAVING_UP | {State.RUNNING},
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED, State.FATAL, State.UNKNOWN}),
    State.STOPPING: frozenset(
        {State.STOPPED, State.EXITED, State.BACKOFF, State.FATAL, State.UNKNOWN}
    ),
    State.EXITED: frozenset(
        {State.STARTING, State.BACKOFF, State.STOPPED, State.FATAL, State.UNKNOWN}
    ),
    State.FATAL: frozenset({State.STARTING, State.STOPPED}),
}


class InvalidTransition(RuntimeError):
    """A state change that the state machine does not allow."""


def check_transition(current: State, new: State) -> None:
    """Raise InvalidTransition when `current -> new` is not allowed."""
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"{current} -> {new} is not a valid transition")


def is_up(state: State) -> bool:
    """1 for the `component_up` metric: running (ready) or serving while unhealthy is not up."""
    return state is State.RUNNING
