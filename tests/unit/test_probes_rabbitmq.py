from chimera_ops.probes.rabbitmq import evaluate_depths, parse_list_queues


def test_parse_list_queues():
    out = "orders\t12\nmy queue\t0\ngarbage line\n"
    assert parse_list_queues(out) == {"orders": 12, "my queue": 0}


def test_depth_verdicts():
    depths = {"orders": 12000, "fills": 3}
    assert evaluate_depths(depths, [], None)[0]
    ok, reason = evaluate_depths(depths, [], 10_000)
    assert not ok and "orders=12000" in reason
    assert evaluate_depths(depths, ["fills"], 10_000)[0]
    ok, reason = evaluate_depths(depths, ["missing"], 10)
    assert not ok and "missing" in reason
