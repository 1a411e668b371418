// Wake-ups across processes: 5 processes share one limit through a real redis-server. When room
// frees in one (a completion), the waiters in the others learn at once on the store's wake channel
// and go: p99 from room freeing to the next go within 50 ms (target), against ~1 s (half the waiter
// TTL) when they only poll.
import assert from 'node:assert/strict';
import { after, before, slowTest as test } from '../../js/test/harness.mjs';
import { startRedis } from '../../js/test/redis-server.mjs';
import { measureWakeups } from './support/wakeup.mjs';

let redis;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.stop();
});

for (const kind of ['concurrency', 'window']) {
  test(`5 processes, a ${kind} limit: the next waiter goes within 50 ms of room freeing (p99)`, async () => {
    const r = await measureWakeups({ redisPort: redis.port, kind, processes: 5, rounds: 20 });
    console.log(`wake-ups (${kind}): ${r.turns} turns, p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, max ${r.max.toFixed(1)} ms, ${r.wakeups} wake-up messages`);
    assert.equal(r.overlaps, 0, 'two holders at once');
    assert.ok(r.wakeups > 0, 'no wake-up message arrived');
    assert.ok(r.p99 <= 50, `p99 ${r.p99} ms > 50 ms`);
  });
}

test('without the wake channel, waiters only learn at their next poll (the comparison)', async () => {
  const r = await measureWakeups({ redisPort: redis.port, kind: 'concurrency', processes: 5, rounds: 2, wake: false });
  console.log(`polling only (concurrency): ${r.turns} turns, p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms`);
  assert.equal(r.wakeups, 0);
  assert.ok(r.p50 > 50, `p50 ${r.p50} ms: the wake channel was not what made the difference`);
});
