"""The multi-tenant BaseLinker platform (examples/baselinker_platform.py) against the mock
BaseLinker of the Node package in a child process (100 a minute per token counted at arrival after
10-60 ms of latency, time 30x faster; over it ERROR_BLOCKED_TOKEN for a scaled 10 minutes): shops
of weights 3/2/1 and a noisy shop of weight 1 with a flood share two tokens; a new shop asks
mid-run; the first token is revoked mid-run (401)."""

from __future__ import annotations

import shutil

import pytest
from baselinker_platform import NodeMockBaseLinker, run_platform

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="the mock BaseLinker runs on node")


async def test_no_block_shares_by_weight_a_newcomer_not_held_behind_the_flood_a_revoked_token_skipped() -> None:
    mock = NodeMockBaseLinker(scale=30)
    try:
        tokens = ["secret-1", "secret-2"]
        report = await run_platform(mock.url, tokens, scale=30, on_revoke=mock.revoke)
        stats = mock.stats()
    finally:
        mock.close()
    print(report)
    assert report.failures == []
    # Zero blocks, and no token's window ever over the server's 100.
    assert stats["blocks"] == 0
    assert all(stats["busiest"].get(t, 0) <= 100 for t in tokens), stats["busiest"]
    # Each shop's share within 5% of its fair share by weight.
    for s in report.shops:
        assert abs(s.share - s.fair) <= 0.05 * s.fair, s
    # The new shop's first request went within a window.
    assert report.new_wait <= report.window + 0.5, report.new_wait
    # The revoked token: its breaker opened on the first 401 reported; from then on only its
    # half-open probes went on it (the core's own order of events), and the run went on on the other.
    assert stats["unauthorized"] >= 1
    assert any(e.type == "breaker_opened" and e.limit == "token@token-1" and e.reason == "auth" for e in report.events)
    sent, probes = report.after_revoked["token-1"]
    assert sent <= probes, (sent, probes)
    assert report.total > 200, report.total
