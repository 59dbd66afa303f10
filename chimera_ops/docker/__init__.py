"""Docker support of the agent: the engine connection and its one event stream (`engine`), the
container cgroup readers (`cgroup`), and `init --from-compose` (`compose_import`).

Nothing here is imported for a process-only config: the docker SDK is loaded only by `engine`,
and only when a config has a `runtime: docker` component (the agent's idle RSS is benchmarked).
"""
