// The shared store (Redis), the same tests for every JavaScript package (the napi addon under Node
// and Bun, the wasm module under Node): each package's test file calls `sharedTests` with its module
// and the Redis client class (ioredis, from the package's own devDependencies). A real redis-server
// per file; without one the tests fail (scripts/test.sh installs it). Windows here count from the go
// (`hold: 'go'`): these tests are about the store's mechanics; the default hold (until completion
// plus per) is tested in core/tests/shared_store.rs and by the wake-up and Back Market runs.
import assert from 'node:assert/strict';
import { after, before, describe, test } from './harness.mjs';
import { startRedis } from './redis-server.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Declares the shared store tests for one package.
 * @param pkg the package's module (`SharedTrafficControl`, `TrafficControlError`)
 * @param Redis the ioredis client class
 */
export function sharedTests({ SharedTrafficControl, TrafficControlError }, Redis) {
  let server;
  const clients = [];
  let n = 0;

  function client(port = server.port, offline = true) {
    // Commands wait for the connection (offline queue) but fail after one retry: the controller then
    // applies its own policy for an unreachable store.
    const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1, enableOfflineQueue: offline, retryStrategy: () => 200 });
    c.on('error', () => {});
    clients.push(c);
    return c;
  }

  const config = (limits, extra = {}) => ({ limits, global: Object.keys(limits).filter((k) => k !== 'slots'), ...extra });

  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await server?.stop();
  });

  describe('shared store', () => {
    test('one round trip per admission, the script loaded by EVAL after NOSCRIPT', async () => {
      server.cli('script', 'flush');
      let trips = 0;
      const tc = new SharedTrafficControl(config({ api: { kind: 'window', max: 100, per: '1s', hold: 'go' } }), { redis: client(), account: `rt-${++n}`, onRoundTrip: () => trips++ });
      const permit = await tc.acquire({ url: '/a' });
      assert.equal(trips, 2, 'EVALSHA answered NOSCRIPT, then EVAL');
      await permit.complete({ status: 200 });
      assert.equal(trips, 2, 'a completion with nothing to report costs nothing');
      for (let i = 0; i < 20; i++) await tc.acquire({ url: '/a' });
      assert.equal(trips, 22, 'then one EVALSHA per admission');
    });

    test('a window holds a request until its completion plus per; the completion wakes a waiter in another controller', async () => {
      const account = `hold-${++n}`;
      const cfg = config({ api: { kind: 'window', max: 1, per: 200 } });
      const a = new SharedTrafficControl(cfg, { redis: client(), account });
      const b = new SharedTrafficControl(cfg, { redis: client(), account, waiterTtl: 4_000 });
      const permit = await a.acquire({ url: '/x' });
      const t0 = performance.now();
      const went = b.acquire({ url: '/x' }).then((p) => ({ p, at: performance.now() - t0 }));
      await sleep(100);
      const completedAt = performance.now() - t0;
      await permit.complete({ status: 200 });
      const { p, at } = await went;
      // Without the wake-up B would ask again only after half its waiter TTL (2 s).
      assert.ok(at >= completedAt + 195, `went at ${at} ms, before the completion (${completedAt} ms) plus per`);
      assert.ok(at < completedAt + 1_000, `went at ${at} ms: the completion did not wake it`);
      assert.ok(b.wakeups > 0);
      await p.complete({ status: 200 });
      await Promise.all([a.close(), b.close()]);
    });

    test('acquire learns an unknown Keepa balance with the free /token request, once for many callers', async () => {
      const seen = [];
      const fetch = async (url) => {
        seen.push(String(url));
        return new Response(JSON.stringify({ tokensLeft: 300, refillIn: 30_000, refillRate: 20, timestamp: Date.now() }), { status: 200 });
      };
      const tc = new SharedTrafficControl('keepa', { redis: client(), account: `learn-${++n}`, fetch, env: {} });
      const permits = await Promise.all([1, 2].map((c) => tc.acquire({ method: 'GET', url: `https://api.keepa.com/bestsellers?key=K&category=${c}` })));
      assert.equal(permits.length, 2);
      assert.deepEqual(seen, ['https://api.keepa.com/token?key=K']);
      const tokens = (await tc.snapshot()).limits.find((l) => l.name === 'tokens');
      assert.equal(tokens.balance, 200, 'the balance /token reported, less the two bestsellers');
      await Promise.all(permits.map((p) => p.complete({ status: 200 })));
      await tc.close();
    });

    test('two controllers on one account never exceed a window together', async () => {
      const account = `win-${++n}`;
      const cfg = config({ api: { kind: 'window', max: 5, per: 400, hold: 'go' } });
      const a = new SharedTrafficControl(cfg, { redis: client(), account });
      const b = new SharedTrafficControl(cfg, { redis: client(), account });
      const times = [];
      const t0 = performance.now();
      await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).acquire({ url: '/x' }).then(() => times.push(performance.now() - t0))));
      times.sort((x, y) => x - y);
      // Any 5 consecutive admissions span no less than the window (client-side times: a few ms of slack).
      for (let i = 5; i < times.length; i++) assert.ok(times[i] - times[i - 5] >= 400 - 15, `${times[i]} - ${times[i - 5]}`);
    });

    test('a waiting HIGH of one controller goes before a LOW flood of another', async () => {
      const account = `prio-${++n}`;
      const cfg = config({ api: { kind: 'window', max: 2, per: 300, hold: 'go' } });
      const a = new SharedTrafficControl(cfg, { redis: client(), account });
      const b = new SharedTrafficControl(cfg, { redis: client(), account });
      await a.acquire({ url: '/x' });
      await a.acquire({ url: '/x' });
      const order = [];
      const lows = Array.from({ length: 6 }, (_, i) => a.acquire({ url: '/x', priority: 'low' }).then(() => order.push(`low${i}`)));
      await sleep(20);
      const high = b.acquire({ url: '/x', priority: 'high' }).then(() => order.push('high'));
      await Promise.all([...lows, high]);
      assert.ok(order.indexOf('high') <= 1, `the HIGH went after ${order.indexOf('high')} LOWs: ${order}`);
    });

    test('tenants are served by weight across controllers; a newcomer does not wait behind the floods', async () => {
      const account = `tenants-${++n}`;
      const tenants = { big: { weight: 3 }, small: { weight: 1 }, late: { weight: 1 } };
      const cfg = config({ api: { kind: 'window', max: 2, per: 100, hold: 'go' } }, { tenants });
      const a = new SharedTrafficControl(cfg, { redis: client(), account });
      const b = new SharedTrafficControl(cfg, { redis: client(), account });
      const order = [];
      const flood = (tc, tenant, k) =>
        Array.from({ length: k }, () => tc.acquire({ url: '/x', tenant }).then(async (p) => { order.push(tenant); await p.complete({ status: 200 }); }));
      const all = [...flood(a, 'big', 30), ...flood(b, 'small', 30)];
      await sleep(450);
      const lateAt = order.length;
      all.push(...flood(b, 'late', 1));
      await Promise.all(all);
      // 24 goes after the first window, both floods waiting: at weights 3 : 1, 18 : 6, within the
      // bound the core's property test checks across processes (2 (1/3 + 1) in served / weight) and
      // one request of each more: here goes are seen as their promises resolve, on a real clock.
      const split = order.slice(2, 26).filter((t) => t !== 'late');
      const big = split.filter((t) => t === 'big').length;
      const small = split.filter((t) => t === 'small').length;
      assert.ok(Math.abs(big / 3 - small) <= 3 * (1 / 3 + 1), `big ${big}, small ${small}: ${order}`);
      // The newcomer goes after at most the requests whose start tags come first (3 of big's, 1 of
      // small's; twice that here, on a real clock), not after the floods.
      const waited = order.indexOf('late') - lateAt;
      assert.ok(waited <= 8, `the newcomer went after ${waited} flood requests: ${order}`);
      await Promise.all([a.close(), b.close()]);
    });

    test('reservations hold across controllers and are spent without competing', async () => {
      const account = `res-${++n}`;
      const cfg = config({ api: { kind: 'window', max: 2, per: 500, hold: 'go' } });
      const a = new SharedTrafficControl(cfg, { redis: client(), account });
      const b = new SharedTrafficControl(cfg, { redis: client(), account });
      const peak = a.reservation({ url: '/x' });
      await a.acquire({ url: '/x', reserve: [peak] });
      assert.ok(peak.id > 0);
      // B sees a full limit (1 used + 1 reserved).
      await assert.rejects(b.acquire({ url: '/x', maxWait: 100 }), (e) => e.code === 'DEADLINE_UNREACHABLE' || e.code === 'DEADLINE_EXCEEDED');
      const t0 = performance.now();
      await a.acquire({ url: '/x', priority: 'high', spend: peak });
      assert.ok(performance.now() - t0 < 50);
      assert.equal(await peak.release(), false, 'spent');
    });

    test('a lease not completed expires and its slot returns', async () => {
      const account = `lease-${++n}`;
      const cfg = { limits: { slots: { kind: 'concurrency', max: 1 } }, global: ['slots'], lease_ttl: 300 };
      const a = new SharedTrafficControl(cfg, { redis: client(), account });
      await a.acquire({ url: '/x' }); // never completed: a crashed caller
      const t0 = performance.now();
      const p = await a.acquire({ url: '/x' });
      const waited = performance.now() - t0;
      assert.ok(waited >= 280 && waited < 1500, `waited ${waited} ms`);
      await p.complete({ status: 200 });
      const t1 = performance.now();
      await a.acquire({ url: '/x' });
      assert.ok(performance.now() - t1 < 100, 'a completion frees at once');
    });

    test('a 429 pauses every controller on the account', async () => {
      const account = `pause-${++n}`;
      const cfg = config({ api: { kind: 'window', max: 100, per: '1s', hold: 'go' } }, { feedback: { max_retries: 0 } });
      const a = new SharedTrafficControl(cfg, { redis: client(), account });
      const b = new SharedTrafficControl(cfg, { redis: client(), account });
      const p = await a.acquire({ url: '/x' });
      assert.deepEqual(await p.complete({ status: 429, headers: { 'retry-after': '0.3' } }), { kind: 'give_up' }, 'no retries configured');
      const t0 = performance.now();
      await b.acquire({ url: '/x' });
      assert.ok(performance.now() - t0 >= 280, 'B waited for the pause');
    });

    test('a rate-limited request is retried on the permit complete() gives, after the pause, before a lower priority elsewhere', async () => {
      const account = `retry-${++n}`;
      const cfg = config({ api: { kind: 'window', max: 1, per: 200, hold: 'go' } }, { feedback: { max_retries: 2 } });
      const a = new SharedTrafficControl(cfg, { redis: client(), account });
      const b = new SharedTrafficControl(cfg, { redis: client(), account });
      const first = await a.acquire({ url: '/x', priority: 'high' });
      const t0 = performance.now();
      const retried = first.complete({ status: 429, headers: { 'retry-after': '0.3' } });
      await sleep(50);
      // B's LOW request asks while the limit is paused; the retry (HIGH) keeps its claim.
      let bAt = 0;
      const low = b.acquire({ url: '/y', priority: 'low' }).then((p) => ((bAt = performance.now() - t0), p));
      const c = await retried;
      const at = performance.now() - t0;
      assert.equal(c.kind, 'retry');
      assert.equal(c.permit.request, first.request, 'the retry goes under its id');
      assert.ok(at >= 280, `the retry waited for the pause: ${at} ms`);
      assert.equal(bAt, 0, 'B went no sooner than the retry');
      // Two more 429s: one retry left, then give_up.
      const again = await c.permit.complete({ status: 429, headers: { 'retry-after': '0.05' } });
      assert.equal(again.kind, 'retry');
      assert.deepEqual(await again.permit.complete({ status: 429, headers: { 'retry-after': '0.05' } }), { kind: 'give_up' });
      (await low).complete({ status: 200 });
      assert.ok(bAt >= at, `B went after the retry: ${bAt} ms vs ${at} ms`);
      // schedule() runs the task again on the retry's permit.
      let calls = 0;
      const res = await a.schedule({ url: '/z' }, async () => (++calls === 1 ? new Response('slow down', { status: 429, headers: { 'retry-after': '0.05' } }) : new Response('ok')));
      assert.equal(await res.text(), 'ok');
      assert.equal(calls, 2);
      await Promise.all([a.close(), b.close()]);
    });

    test('metrics: this process counts what became of its requests; the limits are the account\'s', async () => {
      const account = `metrics-${++n}`;
      const cfg = config({ api: { kind: 'window', max: 2, per: 300, hold: 'go' } }, { routes: [{ name: 'catalog', path: '^/catalog' }], feedback: { max_retries: 0 } });
      const a = new SharedTrafficControl(cfg, { redis: client(), account });
      const b = new SharedTrafficControl(cfg, { redis: client(), account });
      await a.acquire({ url: '/catalog/1' });
      await b.acquire({ url: '/catalog/2' });
      const t0 = performance.now();
      const late = await a.acquire({ url: 'https://api.example.com/catalog/3?key=secret', priority: 'high' });
      const waited = (performance.now() - t0) / 1000;
      await late.complete({ status: 429, headers: { 'retry-after': '0.05' } });
      const e = await a.acquire({ url: '/catalog/4', cost: 3 }).catch((x) => x);
      assert.equal(e.code, 'COST_EXCEEDS_CAPACITY');
      const m = await a.metrics();
      const count = (route, priority, result) => m.requests.find((r) => r.route === route && r.priority === priority && r.result === result)?.count ?? 0;
      assert.equal(count('catalog', 'normal', 'went_at_once'), 1, 'only A\'s own request');
      assert.equal(count('catalog', 'high', 'went_after_wait'), 1);
      assert.equal(count('catalog', 'high', 'rate_limited'), 1);
      const high = m.wait.find((h) => h.priority === 'high');
      assert.equal(high.count, 1);
      assert.ok(Math.abs(high.sumSeconds - waited) < 0.1, `waited ${high.sumSeconds} s, measured ${waited} s`);
      assert.ok(m.pauses.some((p) => p.limit === 'api' && p.reason === 'retry_after'));
      const api = m.snapshot.limits.find((l) => l.name === 'api');
      assert.equal(api.capacity, 2);
      assert.ok(api.used >= 1 && api.used <= 2, `the account's window holds the late request (and maybe B's): ${api.used}`);
      const text = await a.metricsText();
      assert.match(text, /^traffic_control_requests_total\{route="catalog",priority="high",result="went_after_wait"\} 1$/m);
      assert.match(text, /^traffic_control_limit_capacity\{limit="api"\} 2$/m);
      assert.ok(!text.includes('secret') && !text.includes('example.com'), 'never a URL, never a key');
      const other = await b.metrics();
      assert.equal(other.requests.reduce((s, r) => s + r.count, 0), 1, 'B counted its one request');
      await Promise.all([a.close(), b.close()]);
    });

    test('shadow mode: a stricter config beside the shared store reports the waits it would have imposed', async () => {
      const account = `shadow-${++n}`;
      const tc = new SharedTrafficControl(config({ api: { kind: 'window', max: 10, per: '1s', hold: 'go' } }), { redis: client(), account });
      assert.equal(tc.shadowReport(), null);
      assert.throws(() => tc.setShadow({ limits: { api: { kind: 'window', max: 0, per: '1s' } } }), (e) => e.code === 'CONFIG' && /limits\.api\.max/.test(e.message));
      tc.setShadow(config({ api: { kind: 'window', max: 2, per: 200, hold: 'go' } }));
      for (let i = 0; i < 4; i++) (await tc.acquire({ url: `/x/${i}` })).complete({ status: 200 });
      await sleep(450);
      const r = tc.shadowReport();
      assert.equal(r.enforced.requests, 4, JSON.stringify(r));
      assert.equal(r.enforced.wentAtOnce, 4, 'the store let all four go');
      assert.equal(r.shadow.wentAtOnce, 2);
      assert.equal(r.shadow.wentAfterWait, 2, '2 per 200 ms: two would have waited');
      assert.ok(r.shadow.waitSeconds.max >= 0.15 && r.shadow.waitSeconds.max <= 0.45, JSON.stringify(r.shadow));
      tc.setShadow(null);
      assert.equal(tc.shadowReport(), null);
      await tc.close();
    });

    test('events: every process tells its listeners what became of its requests, one id per request across processes', async () => {
      const account = `events-${++n}`;
      const cfg = config({ api: { kind: 'window', max: 2, per: 300, hold: 'go' } }, { feedback: { block: 20, cooldown: 20, max_retries: 0 } });
      const seenA = [];
      const a = new SharedTrafficControl(cfg, { redis: client(), account, onEvent: (e) => seenA.push(e) });
      const b = new SharedTrafficControl(cfg, { redis: client(), account });
      const seenB = [];
      const off = b.on((e) => seenB.push(e));
      assert.equal(typeof a.now(), 'number');
      const first = await Promise.all([a.acquire({ method: 'POST', url: '/ws/listings/1?key=SECRET' }), a.acquire({ url: '/x/2', priority: 'high' })]);
      // B's request waits for the window: queued, then go under the same id.
      const late = await b.acquire({ url: '/x/3', priority: 'low' });
      await first[0].complete({ status: 429, headers: { 'retry-after': '0' } });
      await first[1].complete({ status: 200 });
      await late.complete({ status: 204 });
      // B fills the window: a request that cannot wait for it is refused under an id of its own.
      // (First A's second request leaves the window: it went in the same instant as the one whose
      // slot B's late request took, so on a loaded machine it can still be there for a moment.)
      await sleep(20);
      const extra = await b.acquire({ url: '/x/4' });
      await assert.rejects(b.acquire({ url: '/x/5', maxWait: 5 }), (e) => e.code === 'DEADLINE_UNREACHABLE' || e.code === 'DEADLINE_EXCEEDED');
      await extra.complete({ status: 200 });
      await sleep(20);
      const kinds = (list) => list.map((e) => e.type);
      assert.deepEqual(kinds(seenA), ['go', 'go', 'completed', 'rate_limited', 'completed'], JSON.stringify(seenA));
      assert.equal(seenA[0].endpoint, 'POST /ws/listings/1', 'no secret');
      assert.deepEqual([seenA[2].responseStatus, seenA[4].responseStatus], [429, 200]);
      assert.equal(seenA[1].priority, 'high');
      assert.deepEqual(kinds(seenB), ['queued', 'go', 'completed', 'go', kinds(seenB)[4], 'completed'], JSON.stringify(seenB));
      assert.equal(seenB[0].requestId, seenB[1].requestId, 'queued and go name one request');
      assert.equal(seenB[1].requestId, late.request);
      assert.ok(seenB[1].durationMs > 100, `waited ${seenB[1].durationMs} ms`);
      const ids = new Set([...seenA, ...seenB.slice(0, 3)].map((e) => e.requestId));
      assert.equal(ids.size, 3, 'three requests, three ids, across the two processes');
      const last = seenB[4];
      assert.ok(last.type === 'rejected' || last.type === 'expired', JSON.stringify(last));
      assert.ok(last.requestId > 0 && !ids.has(last.requestId));
      assert.ok(seenA.every((e) => e.timestampMs <= a.now()));
      assert.equal(off(), true);
      const before = seenB.length;
      await sleep(300);
      await (await b.acquire({ url: '/x/6' })).complete({ status: 200 });
      assert.equal(seenB.length, before, 'no listener: no events');
      await Promise.all([a.close(), b.close()]);
    });

    test('unreachable Redis: fail closed, at once or after the maximum wait', async () => {
      const dead = client(1, false); // nothing listens on port 1
      const cfg = config({ api: { kind: 'window', max: 100, per: '1s', hold: 'go' } });
      const fail = new SharedTrafficControl(cfg, { redis: dead, account: `dead-${++n}`, onUnavailable: 'fail' });
      const e1 = await fail.acquire({ url: '/x' }).catch((e) => e);
      assert.ok(e1 instanceof TrafficControlError && e1.code === 'STORE_UNAVAILABLE' && e1.kind === 'store', String(e1));
      const wait = new SharedTrafficControl(cfg, { redis: dead, account: `dead-${++n}` });
      const t0 = performance.now();
      const e2 = await wait.acquire({ url: '/x', maxWait: 300 }).catch((e) => e);
      const waited = performance.now() - t0;
      assert.equal(e2.code, 'STORE_UNAVAILABLE');
      assert.ok(waited >= 150 && waited < 1000, `failed after ${waited} ms`);
    });

    test('a completion while Redis is unreachable waits under the policy, then lands or fails clearly', async () => {
      const real = client();
      let down = false;
      const flaky = {
        evalsha: (...a) => (down ? Promise.reject(new Error('connection lost')) : real.evalsha(...a)),
        eval: (...a) => (down ? Promise.reject(new Error('connection lost')) : real.eval(...a)),
      };
      const cfg = config({ slots: { kind: 'concurrency', max: 1 } }, { global: ['slots'] });
      const account = `flaky-${++n}`;
      const tc = new SharedTrafficControl(cfg, { redis: flaky, account });
      const permit = await tc.acquire({});
      down = true;
      setTimeout(() => (down = false), 200);
      await permit.complete({ status: 200 }); // retried until Redis answered
      await tc.acquire({ maxWait: 100 }); // the slot came back
      const failing = new SharedTrafficControl(cfg, { redis: flaky, account: `flaky-${++n}`, onUnavailable: 'fail' });
      const p2 = await failing.acquire({});
      down = true;
      const e = await p2.complete({ status: 200 }).catch((err) => err);
      down = false;
      assert.ok(e instanceof TrafficControlError && e.code === 'STORE_UNAVAILABLE', String(e));
    });

    test('requests that can never go fail at once with their code', async () => {
      const tc = new SharedTrafficControl(config({ api: { kind: 'window', max: 2, per: '1s', hold: 'go' } }), { redis: client(), account: `bad-${++n}` });
      await assert.rejects(tc.acquire({ url: '/x', cost: 3 }), (e) => e.code === 'COST_EXCEEDS_CAPACITY');
      await assert.rejects(tc.acquire({ route: 'nope' }), (e) => e.code === 'UNKNOWN_ROUTE');
      assert.throws(() => new SharedTrafficControl(config({ api: { kind: 'window', max: 2, per: '1s', hold: 'go' } }), { redis: client(), account: 'a{b}' }), (e) => e.code === 'CONFIG');
      const snap = await tc.snapshot();
      assert.equal(snap.limits[0].name, 'api');
    });
  });
}
