// The multi-tenant BaseLinker platform (examples/baselinker-platform.mjs) against a mock BaseLinker
// in a child process (100 a minute per token counted at arrival after 10-60 ms of latency, time
// 60x faster; over it ERROR_BLOCKED_TOKEN for a scaled 10 minutes): shops of weights 3/2/1 and a
// noisy shop of weight 1 with a flood share two tokens; a new shop asks mid-run; the first token is
// revoked mid-run (401).
import assert from 'node:assert/strict';
import { slowTest as test } from '../../js/test/harness.mjs';
import { runPlatform, report } from '../examples/baselinker-platform.mjs';
import { spawnMockBaseLinker } from './support/mock-baselinker.mjs';

test('BaseLinker platform: no block, shares by weight within 5%, a newcomer not held behind the flood, a revoked token skipped', async () => {
  const mock = await spawnMockBaseLinker({ max: 100, windowMs: 1000, blockMs: 10_000 });
  try {
    const tokens = ['secret-1', 'secret-2'];
    const r = await runPlatform({ url: mock.url, tokens, scale: 60, seconds: 5, newAt: 1.5, revokeAt: 2.5, onRevoke: (t) => mock.revoke(t) });
    const stats = await mock.stats();
    console.log(report(r));
    assert.deepEqual(r.failures, []);
    // Zero blocks, and no token's window ever over the server's 100.
    assert.equal(stats.blocks, 0);
    for (const t of tokens) assert.ok((stats.busiest[t] ?? 0) <= 100, `${t}: ${stats.busiest[t]}`);
    // Each shop's share within 5% of its fair share by weight.
    for (const s of r.shops) {
      assert.ok(Math.abs(s.share - s.fair) <= 0.05 * s.fair, `${s.shop}: ${(100 * s.share).toFixed(1)}% against ${(100 * s.fair).toFixed(1)}%`);
    }
    // The new shop's first request goes after at most one request of each other shop, within a window.
    assert.ok(r.newAhead <= 4, `${r.newAhead} requests went between its ask and its go`);
    assert.ok(r.newWait <= r.windowMs + 250, `${r.newWait} ms`);
    // The revoked token: its breaker opened on the first 401 reported; from then on only its
    // half-open probes went on it (the core's own order of events), and the run went on on the other.
    assert.ok(stats.unauthorized >= 1);
    assert.ok(r.events.some((e) => e.type === 'breaker_opened' && e.limit === 'token@token-1' && e.reason === 'auth'));
    const revoked = r.afterRevoked.find((t) => t.token === 'token-1');
    assert.ok(revoked.sent <= revoked.probes, `${revoked.sent} went after it opened, ${revoked.probes} probes`);
    assert.ok(r.total > 250, `${r.total} served`);
  } finally {
    await mock.close();
  }
});
