// The package's surface, the same tests for every JavaScript package (the napi addon under Node and
// Bun, the wasm module under Node): each package's test file calls `surfaceTests` with its module.
import assert from 'node:assert/strict';
import { test, describe } from './harness.mjs';

const window = (max, per) => ({ kind: 'window', max, per });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Rejects with the error the promise rejected with, or fails. */
async function rejection(p) {
  try {
    await p;
  } catch (e) {
    return e;
  }
  assert.fail('expected a rejection');
}

function thrown(f) {
  try {
    f();
  } catch (e) {
    return e;
  }
  assert.fail('expected an exception');
}

/**
 * Declares the surface tests for one package.
 * @param pkg the package's module (`TrafficControl`, `TrafficControlError`, `Priority`)
 * @param loadCommonJs loads the package's CommonJS entry, when it has one
 */
/**
 * @param loadCommonJs loads the package's CommonJS entry, when it has one
 * @param options.readsProcessEnv false for an entry that has no process.env to read (browsers, Workers)
 * @param options.envOverrides false for a build without environment overrides (the wasm browser build)
 * @param options.metrics false for a build without metrics (the wasm browser build)
 * @param options.shadow false for a build without shadow mode (the wasm browser build)
 */
export function surfaceTests({ TrafficControl, TrafficControlError, Priority }, loadCommonJs, { readsProcessEnv = true, envOverrides = true, metrics = true, shadow = metrics, tenants = metrics, breakers = tenants } = {}) {
  describe('config', () => {
    test('an invalid config names the field and the reason, code CONFIG', () => {
      const e = thrown(() => new TrafficControl({ limits: { api: window(0, '1s') } }));
      assert.ok(e instanceof TrafficControlError);
      assert.equal(e.code, 'CONFIG');
      assert.equal(e.kind, 'config');
      assert.match(e.message, /limits\.api\.max/);
      const e2 = thrown(() => new TrafficControl({ limits: { api: { kind: 'window', max: 3, per: 'soon' } } }));
      assert.equal(e2.code, 'CONFIG');
      assert.match(e2.message, /limits\.api\b.*"soon" is not a duration/);
    });

    if (!envOverrides) test('a build without environment overrides says so rather than ignoring them', () => {
      assert.equal(new TrafficControl('backmarket', { env: { PATH: '/bin' } }).config.limits.catalog.max, 15);
      const e = thrown(() => new TrafficControl('backmarket', { env: { BM_RATE_LIMIT_CATALOG_MAX_REQUESTS: '5' } }));
      assert.equal(e.code, 'CONFIG');
      assert.match(e.message, /BM_RATE_LIMIT_CATALOG_MAX_REQUESTS.*no environment overrides.*pass a config object/);
      assert.equal(thrown(() => new TrafficControl('nosuchapi')).code, 'CONFIG');
    });

    if (envOverrides) test('presets by name, overridden from the environment given', () => {
      const tc = new TrafficControl('backmarket', { env: { BM_RATE_LIMIT_CATALOG_MAX_REQUESTS: '5', PATH: '/bin' } });
      const catalog = tc.snapshot().limits.find((l) => l.name === 'catalog');
      assert.equal(catalog.capacity, 5);
      assert.equal(tc.config.limits.global.max, 150);
      // Durations as text and, beside it, in milliseconds; the config reads back as is.
      assert.deepEqual([tc.config.limits.global.per, tc.config.limits.global.per_ms], ['10s', 10000]);
      assert.equal(tc.config.feedback.block_ms, 10000);
      assert.deepEqual(new TrafficControl(tc.config).config, tc.config);
      const e = thrown(() => new TrafficControl('backmarket', { env: { BM_RATE_LIMIT_CATLOG_MAX_REQUESTS: '5' } }));
      assert.equal(e.code, 'CONFIG');
      assert.match(e.message, /BM_RATE_LIMIT_CATLOG_MAX_REQUESTS/);
      assert.equal(thrown(() => new TrafficControl('nosuchapi')).code, 'CONFIG');
    });

    if (readsProcessEnv) test('process.env is read by default', () => {
      process.env.KEEPA_RATE_LIMIT_TOKENS_FLOOR = '7';
      try {
        assert.equal(new TrafficControl('keepa').config.limits.tokens.floor, 7);
      } finally {
        delete process.env.KEEPA_RATE_LIMIT_TOKENS_FLOOR;
      }
    });

    if (loadCommonJs) test('ES module and CommonJS entry points both load', () => {
      const cjs = loadCommonJs();
      assert.equal(typeof cjs.TrafficControl, 'function');
      assert.equal(cjs.Priority.CRITICAL, 'critical');
      assert.ok(new cjs.TrafficControl('keepa').snapshot().limits.length > 0);
    });
  });

  describe('scheduling', () => {
    test('no interval of length W ever holds more than N starts', async () => {
      const tc = new TrafficControl({ limits: { api: window(3, 120) }, global: ['api'] });
      const starts = [];
      tc.on((e) => e.status === 'go' && starts.push(e.timestampMs));
      const wall = [];
      await Promise.all(Array.from({ length: 12 }, () => tc.schedule({}, () => wall.push(performance.now()))));
      assert.equal(starts.length, 12);
      for (let i = 3; i < starts.length; i++) assert.ok(starts[i] - starts[i - 3] >= 120, `admissions ${i - 3} and ${i}`);
      // Tasks start when the host gets to them, a little after their admission (up to ~0.8 ms in
      // the wasm module's first calls): the starts keep the window's spacing within 1 ms.
      for (let i = 3; i < wall.length; i++) assert.ok(wall[i] - wall[i - 3] >= 119, `task starts ${i - 3} and ${i}`);
    });

    test('one tick of schedule() calls goes to the core in one batch: each job keeps its own answer and order', async () => {
      const tc = new TrafficControl({ limits: { api: window(2, 60) }, global: ['api'], routes: [{ name: 'items', path: '^/items' }] });
      const order = [];
      const settled = await Promise.allSettled([
        tc.schedule({ route: 'nosuch' }, () => 'never'),
        tc.schedule({ method: 'GET', url: '/items/1?key=secret' }, () => order.push('items')),
        tc.schedule({ cost: 5 }, () => 'never'),
        tc.schedule({ priority: Priority.LOW }, (permit) => (order.push('low'), permit.request > 0)),
        tc.schedule({ priority: Priority.CRITICAL, maxWait: 1_000 }, () => order.push('critical')),
        tc.schedule({ priority: 'urgent' }, () => 'never'),
      ]);
      assert.deepEqual(settled.map((r) => (r.status === 'fulfilled' ? r.value : r.reason.code)), [
        'UNKNOWN_ROUTE', 1, 'COST_EXCEEDS_CAPACITY', true, 3, 'INVALID_ARGUMENT',
      ]);
      assert.ok(settled[0].reason instanceof TrafficControlError);
      assert.equal(settled[0].reason.kind, 'never_succeeds');
      assert.deepEqual(order, ['items', 'low', 'critical']);
      assert.equal(tc.snapshot().inFlight, 0);
    });

    test('priorities: CRITICAL, HIGH, NORMAL, LOW; FIFO within a level', async () => {
      const tc = new TrafficControl({ limits: { api: window(1, 40) }, global: ['api'] });
      await tc.schedule({}, () => {});
      const order = [];
      const job = (name, priority) => tc.schedule({ priority }, () => order.push(name));
      await Promise.all([
        job('low1', Priority.LOW),
        job('normal', Priority.NORMAL),
        job('low2', Priority.LOW),
        job('high', Priority.HIGH),
        job('critical', Priority.CRITICAL),
      ]);
      assert.deepEqual(order, ['critical', 'high', 'normal', 'low1', 'low2']);
    });

    test('tenants: within a priority, waiting requests are served by weight, a newcomer ahead of a flood', async () => {
      const config = { limits: { api: window(1, 10) }, global: ['api'], tenants: { big: { weight: 3 }, small: { weight: 1 } } };
      if (!tenants) {
        // The wasm browser build leaves tenants out: such a config is refused, naming the field.
        assert.throws(() => new TrafficControl(config), (e) => e.code === 'CONFIG' && /tenants/.test(e.message));
        return;
      }
      const tc = new TrafficControl(config);
      await tc.schedule({}, () => {});
      const order = [];
      const jobs = [];
      for (let i = 0; i < 12; i++) for (const tenant of ['big', 'small']) jobs.push(tc.schedule({ tenant }, () => order.push(tenant)));
      await sleep(45);
      // A tenant the config does not name arrives with one request: the default class.
      jobs.push(tc.schedule({ tenant: 'nobody' }, () => order.push('nobody')));
      await Promise.all(jobs);
      // Weights 3 : 1 while both wait: 6 of the first 8 (the newcomer left out).
      const first8 = order.filter((t) => t !== 'nobody').slice(0, 8);
      assert.equal(first8.filter((t) => t === 'big').length, 6, order.join(' '));
      // It arrived after about 5 admissions; behind a 24-request flood it would be last.
      assert.ok(order.indexOf('nobody') <= 9, order.join(' '));
      assert.throws(() => new TrafficControl({ limits: { api: window(1, 10) }, tenants: { a: { weight: 0 } } }), (e) => e.code === 'CONFIG' && /tenants\.a\.weight/.test(e.message));
    });

    test('a request waits only for the limits it needs', async () => {
      const tc = new TrafficControl({
        limits: { global: window(100, '1s'), catalog: window(1, '1s') },
        global: ['global'],
        routes: [{ name: 'write', method: 'POST', path: '^/ws/listings', limits: ['catalog'] }],
      });
      await tc.schedule({ method: 'POST', url: '/ws/listings/1' }, () => {});
      const waiting = tc.schedule({ method: 'POST', url: '/ws/listings/2', priority: Priority.NORMAL }, () => 'write');
      const t0 = performance.now();
      await tc.schedule({ method: 'GET', url: '/ws/orders', priority: Priority.LOW }, () => {});
      assert.ok(performance.now() - t0 < 500, 'the LOW read was not held behind the NORMAL write');
      tc.close();
      assert.equal((await rejection(waiting)).code, 'CANCELLED');
    });

    test('acquire hands over a permit; complete reports the outcome', async () => {
      const events = [];
      const tc = new TrafficControl({ limits: { api: { kind: 'concurrency', max: 1 } }, global: ['api'] }, { onEvent: (e) => events.push(e) });
      const permit = await tc.acquire({ method: 'GET', url: 'https://api.example/items?key=secret' });
      assert.equal(tc.tryAcquire({}).decision, 'wait');
      assert.deepEqual(await permit.complete({ status: 200, headers: { 'content-type': 'application/json' } }), { kind: 'done' });
      await sleep(0);
      const completed = events.find((e) => e.status === 'completed');
      assert.equal(completed.responseStatus, 200);
      assert.equal(completed.endpoint, 'GET /items');
      assert.ok(events.every((e) => !JSON.stringify(e).includes('secret')));
      const go = tc.tryAcquire({});
      assert.equal(go.decision, 'go');
      go.permit.cancel();
    });

    test('tryAcquire answers go, wait until an instant, or reject', () => {
      const tc = new TrafficControl({ limits: { api: window(1, 1000) }, global: ['api'] });
      const go = tc.tryAcquire({});
      assert.equal(go.decision, 'go');
      // In flight, it holds the window until its completion plus per.
      assert.equal(tc.tryAcquire({}).decision, 'wait');
      go.permit.complete({ status: 200 });
      const wait = tc.tryAcquire({});
      assert.equal(wait.decision, 'wait');
      assert.ok(Math.abs(wait.until - (tc.now() + 1000)) < 50);
      const reject = tc.tryAcquire({ cost: 2 });
      assert.equal(reject.decision, 'reject');
      assert.equal(reject.error.code, 'COST_EXCEEDS_CAPACITY');
    });
  });

  describe('metrics', () => {
    if (metrics) test('requests by route, priority and result; waits; gauges; as data and as Prometheus text, never a URL', async () => {
      const tc = new TrafficControl({ limits: { global: window(2, 100) }, global: ['global'], routes: [{ name: 'catalog', path: '^/catalog' }] });
      await Promise.all([1, 2, 3].map((i) => tc.schedule({ url: `https://api.example.com/catalog/${i}?key=secret`, priority: Priority.HIGH }, () => i)));
      const m = tc.metrics();
      const count = (result) => m.requests.find((r) => r.route === 'catalog' && r.priority === 'high' && r.result === result)?.count;
      assert.equal(count('went_at_once'), 2);
      assert.equal(count('went_after_wait'), 1);
      const high = m.wait.find((h) => h.priority === 'high');
      assert.equal(high.count, 3);
      assert.deepEqual(high.buckets.at(-1), [Infinity, 3]);
      assert.ok(high.sumSeconds > 0.05 && high.sumSeconds < 1, String(high.sumSeconds));
      assert.equal(m.snapshot.limits[0].capacity, 2);
      const text = tc.metricsText();
      assert.match(text, /^traffic_control_requests_total\{route="catalog",priority="high",result="went_after_wait"\} 1$/m);
      assert.match(text, /^traffic_control_wait_seconds_bucket\{priority="high",le="\+Inf"\} 3$/m);
      assert.ok(!text.includes('secret') && !text.includes('/catalog'));
      assert.deepEqual(
        m.families.map((f) => f.name).slice(0, 3),
        ['traffic_control_requests_total', 'traffic_control_rejected_total', 'traffic_control_wait_seconds'],
      );
    });
    if (!metrics) test('a build without metrics says so', () => {
      const tc = new TrafficControl({ limits: { global: window(2, 100) }, global: ['global'] });
      assert.equal(thrown(() => tc.metrics()).code, 'CONFIG');
    });
  });

  describe('shadow mode', () => {
    if (shadow) test('a stricter shadow reports the waits it would have made; nothing it decides is acted on', async () => {
      const tc = new TrafficControl({ limits: { api: window(3, 100) }, global: ['api'] });
      assert.equal(tc.shadowReport(), null);
      tc.setShadow({ limits: { api: window(1, 100) }, global: ['api'] });
      const t0 = tc.now();
      const went = await Promise.all([1, 2, 3].map((i) => tc.schedule({ url: `https://api.example.com/items/${i}` }, () => tc.now() - t0)));
      assert.ok(went.every((ms) => ms < 90), `the enforced config let all three go at once: ${went}`);
      await sleep(260);
      const r = tc.shadowReport();
      assert.equal(r.tracked, 0);
      assert.deepEqual([r.enforced.requests, r.enforced.wentAtOnce, r.enforced.wentAfterWait], [3, 3, 0]);
      assert.deepEqual([r.shadow.requests, r.shadow.wentAtOnce, r.shadow.wentAfterWait, r.shadow.waiting], [3, 1, 2, 0]);
      assert.equal(r.enforced.waitSeconds.max, 0);
      assert.ok(r.shadow.waitSeconds.max >= 0.19 && r.shadow.waitSeconds.max < 0.3, String(r.shadow.waitSeconds.max));
      assert.ok(r.at >= r.since + 250);
    });

    if (shadow) test('a looser shadow takes what the enforced config refused; a bad shadow config names its field and keeps the running one', async () => {
      const tc = new TrafficControl({ limits: { api: window(2, 1000) }, global: ['api'] });
      tc.setShadow(JSON.stringify({ limits: { api: window(5, 1000) }, global: ['api'] }));
      const e = await rejection(tc.schedule({ url: 'https://api.example.com/bulk', cost: 3 }, () => 0));
      assert.equal(e.code, 'COST_EXCEEDS_CAPACITY');
      const bad = thrown(() => tc.setShadow({ limits: { api: window(0, '1s') } }));
      assert.ok(bad instanceof TrafficControlError);
      assert.equal(bad.code, 'CONFIG');
      assert.match(bad.message, /limits\.api\.max/);
      const r = tc.shadowReport();
      assert.deepEqual(r.enforced.refused, { COST_EXCEEDS_CAPACITY: 1 });
      assert.deepEqual(r.shadow.refused, {});
      assert.equal(r.shadow.wentAtOnce, 1);
      tc.setShadow('backmarket');
      assert.equal(tc.shadowReport().shadow.requests, 0);
      tc.setShadow(null);
      assert.equal(tc.shadowReport(), null);
    });

    if (!shadow) test('a build without shadow mode says so', () => {
      const tc = new TrafficControl({ limits: { global: window(2, 100) }, global: ['global'] });
      assert.equal(thrown(() => tc.setShadow({ limits: { global: window(1, 100) }, global: ['global'] })).code, 'CONFIG');
      assert.equal(tc.shadowReport(), null);
    });
  });

  describe('errors', () => {
    const config = {
      limits: { api: window(2, 200) },
      global: ['api'],
      routes: [{ name: 'items', path: '^/items' }],
      queue: { max_waiting: 2 },
    };

    test('can never succeed: unknown route, unknown limit, cost above capacity — at once', async () => {
      const tc = new TrafficControl(config);
      for (const [options, code] of [
        [{ route: 'nope' }, 'UNKNOWN_ROUTE'],
        [{ limits: ['nope'] }, 'UNKNOWN_LIMIT'],
        [{ cost: 3 }, 'COST_EXCEEDS_CAPACITY'],
      ]) {
        const e = await rejection(tc.schedule(options, () => {}));
        assert.ok(e instanceof TrafficControlError);
        assert.equal(e.code, code);
        assert.equal(e.kind, 'never_succeeds');
      }
    });

    test('a full queue rejects with its own error', async () => {
      const tc = new TrafficControl(config);
      const jobs = Array.from({ length: 4 }, () => tc.schedule({}, () => {}));
      const e = await rejection(tc.schedule({}, () => {}));
      assert.equal(e.code, 'QUEUE_FULL');
      assert.equal(e.kind, 'queue_full');
      await Promise.all(jobs);
    });

    test('a wait longer than maxWait fails at once; a deadline passing while waiting expires', async () => {
      const tc = new TrafficControl({ ...config, queue: { max_waiting: 10 } });
      await Promise.all([tc.schedule({}, () => {}), tc.schedule({}, () => {})]);
      const e = await rejection(tc.schedule({ maxWait: 50 }, () => {}));
      assert.equal(e.code, 'DEADLINE_UNREACHABLE');
      assert.equal(e.kind, 'deadline');
      // Reachable by time alone, but a CRITICAL request arriving later takes the room first.
      const normal = tc.schedule({ maxWait: 230 }, () => {});
      const critical = [tc.schedule({ priority: Priority.CRITICAL }, () => {}), tc.schedule({ priority: Priority.CRITICAL }, () => {})];
      assert.equal((await rejection(normal)).code, 'DEADLINE_EXCEEDED');
      await Promise.all(critical);
    });

    test('aborting the signal removes the waiting request from the queue', async () => {
      const tc = new TrafficControl(config);
      await Promise.all([tc.schedule({}, () => {}), tc.schedule({}, () => {})]);
      const controller = new AbortController();
      let ran = false;
      const job = tc.schedule({ signal: controller.signal }, () => (ran = true));
      assert.equal(tc.waiting, 1);
      controller.abort(new Error('caller left'));
      const e = await rejection(job);
      assert.equal(e.code, 'CANCELLED');
      assert.equal(e.cause.message, 'caller left');
      assert.equal(tc.waiting, 0);
      await sleep(250);
      assert.equal(ran, false);
      assert.match(e.message, /while it waited/);
      const early = await rejection(tc.schedule({ signal: AbortSignal.abort() }, () => {}));
      assert.equal(early.code, 'CANCELLED');
      assert.match(early.message, /before it was asked/, 'a signal aborted before the call says so');
    });

    test('a call made wrong says so', async () => {
      const tc = new TrafficControl(config);
      assert.equal((await rejection(tc.schedule({ priority: 'urgent' }, () => {}))).code, 'INVALID_ARGUMENT');
      assert.equal((await rejection(tc.schedule({ route: 'items', url: '/items/1' }, () => {}))).code, 'INVALID_ARGUMENT');
    });
  });

  describe('reservations', () => {
    const config = {
      limits: { global: window(10, 300), catalog: window(2, 300) },
      global: ['global'],
      routes: [{ name: 'write', method: 'POST', path: '^/ws/listings', limits: ['catalog'] }],
    };

    test('the Dip reserves the Peak in its admission; the Peak spends it without competing', async () => {
      const tc = new TrafficControl(config);
      const peak = tc.reservation({ method: 'POST', url: '/ws/listings/1' });
      await tc.schedule({ method: 'POST', url: '/ws/listings/1', reserve: [peak] }, (permit) => {
        assert.equal(permit.reservations[0], peak);
      });
      assert.equal(typeof peak.id, 'number');
      const catalog = () => tc.snapshot().limits.find((l) => l.name === 'catalog');
      assert.deepEqual([catalog().used, catalog().reserved, catalog().available], [1, 1, 0]);
      // A NORMAL write waits: the last slot is the Peak's.
      const other = tc.schedule({ method: 'POST', url: '/ws/listings/2' }, () => performance.now());
      const t0 = performance.now();
      await tc.schedule({ method: 'POST', url: '/ws/listings/1', priority: Priority.HIGH, spend: peak }, () => {});
      assert.ok(performance.now() - t0 < 100, 'the Peak went at once');
      assert.equal(peak.release(), false, 'spent already');
      assert.ok((await other) - t0 > 200, 'the other write waited for the window');
    });

    test('leaving early releases the reservation', async () => {
      const tc = new TrafficControl(config);
      const peak = tc.reservation({ method: 'POST', url: '/ws/listings/1' });
      await tc.schedule({ method: 'POST', url: '/ws/listings/1', reserve: [peak] }, () => {});
      assert.equal(peak.release(), true);
      assert.equal(tc.snapshot().limits.find((l) => l.name === 'catalog').reserved, 0);
      const e = await rejection(tc.schedule({ spend: tc.reservation({ route: 'write' }) }, () => {}));
      assert.equal(e.code, 'INVALID_ARGUMENT');
    });

    test('an unspent reservation expires after its TTL', async () => {
      const events = [];
      const tc = new TrafficControl(config, { onEvent: (e) => events.push(e.status) });
      const peak = tc.reservation({ method: 'POST', url: '/ws/listings/1', ttl: 50 });
      await tc.schedule({ method: 'POST', url: '/ws/listings/1', reserve: [peak] }, () => {});
      await sleep(120);
      assert.ok(events.includes('reservation_expired'));
      assert.equal(tc.snapshot().reservations, 0);
    });
  });

  describe('budgets and server feedback', () => {
    test('a budget refuses work it cannot afford within maxWait', async () => {
      const tc = new TrafficControl('keepa');
      const unknown = await rejection(tc.schedule({ method: 'GET', url: '/bestsellers' }, () => {}));
      assert.equal(unknown.code, 'BUDGET_UNKNOWN');
      tc.syncBudget('tokens', 60, 30_000);
      await tc.schedule({ method: 'GET', url: '/bestsellers' }, () => {});
      const e = await rejection(tc.schedule({ method: 'GET', url: '/bestsellers', maxWait: 1000 }, () => {}));
      assert.equal(e.code, 'INSUFFICIENT_BUDGET');
      assert.equal(e.kind, 'budget');
      assert.equal(tc.snapshot().limits[0].balance, 10);
    });

    test('fetch feeds a 429 back, waits the Retry-After, and sends again', async () => {
      let calls = 0;
      const fakeFetch = async () =>
        ++calls === 1
          ? new Response('{"error":"slow down"}', { status: 429, headers: { 'retry-after': '0.15' } })
          : new Response('ok', { status: 200 });
      const statuses = [];
      const tc = new TrafficControl(
        { limits: { api: window(100, '1s') }, global: ['api'], feedback: { jitter: 0 } },
        { fetch: fakeFetch, onEvent: (e) => statuses.push(e.status) },
      );
      const t0 = performance.now();
      const res = await tc.fetch('https://api.example/items');
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'ok');
      assert.equal(calls, 2);
      assert.ok(performance.now() - t0 >= 149);
      assert.deepEqual(statuses.filter((s) => s !== 'queued'), ['go', 'completed', 'rate_limited', 'retried', 'go', 'completed']);
    });

    test('schedule() runs a task again when the Response it returned was rate limited', async () => {
      const tc = new TrafficControl({ limits: { api: window(100, '1s') }, global: ['api'], feedback: { jitter: 0 } });
      const answer = (calls) =>
        calls === 1 ? new Response('slow down', { status: 429, headers: { 'retry-after': '0.05' } }) : new Response('ok');
      let sync = 0;
      let later = 0;
      let bare = 0;
      const [a, b, c] = await Promise.all([
        tc.schedule({}, (permit) => answer(++sync)),
        tc.schedule({}, async (permit) => answer(++later)),
        tc.schedule({}, () => answer(++bare)),
      ]);
      assert.deepEqual([a.status, b.status, c.status], [200, 200, 200]);
      assert.deepEqual([sync, later, bare], [2, 2, 2]);
      assert.equal(tc.snapshot().inFlight, 0);
    });

    test('fetch reads Keepa token fields without consuming the caller body', async () => {
      const body = JSON.stringify({ tokensLeft: 42, refillIn: 5000, refillRate: 20, tokensConsumed: 1, timestamp: Date.now() });
      const tc = new TrafficControl('keepa', { fetch: async () => new Response(body, { status: 200 }) });
      tc.syncBudget('tokens', 100);
      const res = await tc.fetch('https://api.keepa.com/product?key=k&asin=B0001');
      assert.equal((await res.json()).tokensLeft, 42);
      assert.equal(tc.snapshot().limits[0].balance, 42);
    });

    test('fetch learns an unknown Keepa balance with the free /token request, once for many callers', async () => {
      const seen = [];
      const keepa = async (input) => {
        const url = new URL(typeof input === 'string' ? input : input.url);
        seen.push(url.pathname + url.search);
        const tokensLeft = url.pathname === '/token' ? 300 : 250;
        return new Response(JSON.stringify({ tokensLeft, refillIn: 30_000, refillRate: 20, timestamp: Date.now() }), { status: 200 });
      };
      const tc = new TrafficControl('keepa', { fetch: keepa });
      assert.equal(tc.snapshot().limits[0].balance, null);
      const [a, b] = await Promise.all([
        tc.fetch('https://api.keepa.com/bestsellers?key=K&domain=1&category=2'),
        tc.fetch('https://api.keepa.com/bestsellers?key=K&domain=1&category=3'),
      ]);
      assert.deepEqual([a.status, b.status], [200, 200]);
      assert.deepEqual(seen.filter((p) => p.startsWith('/token')), ['/token?key=K'], 'one status request, carrying the key');
      assert.equal(seen.length, 3);
      // The last answer's balance, less what is still in flight (the other bestsellers' 50).
      const balance = tc.snapshot().limits[0].balance;
      assert.ok(balance !== null && balance <= 250, `balance ${balance}`);
    });

    test('a breaker opened by 5xx answers holds fetch until it half-opens, and its probe closes it', async () => {
      const config = {
        limits: { key: { kind: 'breaker', failures: 2, open_for: '100ms', close_after: 1 } },
        global: ['key'],
      };
      if (!breakers) {
        // The wasm browser build leaves breakers out: such a config is refused, naming the field.
        assert.throws(() => new TrafficControl(config), (e) => e.code === 'CONFIG' && /limits\.key\.kind/.test(e.message));
        return;
      }
      let calls = 0;
      const events = [];
      const tc = new TrafficControl(config, {
        fetch: async () => (++calls <= 2 ? new Response('down', { status: 503 }) : new Response('ok')),
        onEvent: (e) => events.push(e),
      });
      assert.equal((await tc.fetch('https://api.example/a')).status, 503);
      assert.equal((await tc.fetch('https://api.example/b')).status, 503);
      const opened = events.find((e) => e.type === 'breaker_opened');
      assert.ok(opened, events.map((e) => e.type).join(' '));
      assert.deepEqual([opened.limit, opened.reason], ['key', 'failures']);
      assert.equal(tc.snapshot().limits[0].kind, 'breaker');
      const t0 = performance.now();
      const res = await tc.fetch('https://api.example/c');
      assert.equal(res.status, 200);
      assert.ok(performance.now() - t0 >= 90, `waited ${performance.now() - t0} ms`);
      const kinds = events.map((e) => e.type).filter((k) => k.startsWith('breaker_'));
      assert.deepEqual(kinds, ['breaker_opened', 'breaker_half_open', 'breaker_closed']);
      // A longest wait that ends before the half-open is refused at once.
      calls = 0;
      await tc.fetch('https://api.example/d');
      await tc.fetch('https://api.example/e');
      const error = await rejection(tc.fetch('https://api.example/f', undefined, { maxWait: 10 }));
      assert.equal(error.code, 'DEADLINE_UNREACHABLE');
    });

    test('an end without an outcome is not a failure for a breaker; a task that throws is', async () => {
      if (!breakers) return;
      const events = [];
      const tc = new TrafficControl({ limits: { key: { kind: 'breaker', failures: 2 } }, global: ['key'] }, { onEvent: (e) => events.push(e.type) });
      try {
        for (let i = 0; i < 5; i++) {
          const permit = await tc.acquire({ method: 'GET', url: '/x' });
          await permit.complete();
          await tc.schedule({ method: 'GET', url: '/x' }, () => 'not a response');
        }
        assert.ok(!events.includes('breaker_opened'), events.join(' '));
        for (let i = 0; i < 2; i++) {
          await assert.rejects(tc.schedule({ method: 'GET', url: '/x' }, () => Promise.reject(new Error('connection reset'))));
        }
        assert.ok(events.includes('breaker_opened'), events.join(' '));
      } finally {
        tc.close();
      }
    });

    test('a key pool spreads requests over its keys; permits name the key and fetch sends its headers', async () => {
      const config = {
        limits: { requests: window(2, '1s'), token: { kind: 'breaker' } },
        global: ['requests', 'token'],
        pools: { baselinker: { keys: ['shop-a', 'shop-b'], limits: ['requests', 'token'] } },
      };
      if (!breakers) {
        assert.throws(() => new TrafficControl(config), (e) => e.code === 'CONFIG' && /not in this build/.test(e.message));
        const { token, ...noBreaker } = config.limits;
        const pools = { baselinker: { keys: ['shop-a'], limits: ['requests'] } };
        assert.throws(() => new TrafficControl({ limits: noBreaker, global: ['requests'], pools }), (e) => e.code === 'CONFIG' && /pools/.test(e.message));
        return;
      }
      const seen = [];
      const tc = new TrafficControl(config, {
        fetch: async (input, init) => {
          const token = new Headers(init?.headers).get('x-bltoken');
          seen.push(token);
          return new Response('{"status":"SUCCESS"}', { status: token === 'secret-a' && seen.length > 4 ? 401 : 200 });
        },
        keys: { 'shop-a': { 'X-BLToken': 'secret-a' }, 'shop-b': { 'X-BLToken': 'secret-b' } },
      });
      const keys = [];
      await Promise.all([0, 1, 2, 3].map(() => tc.schedule({}, (permit) => keys.push(permit.key))));
      assert.deepEqual(keys.sort(), ['shop-a', 'shop-a', 'shop-b', 'shop-b']);
      const named = await tc.schedule({ key: 'shop-b', maxWait: 5000 }, (permit) => permit.key);
      assert.equal(named, 'shop-b');
      // Each key's copy of the pool's limits is in the snapshot.
      const copies = tc.snapshot().limits.filter((l) => l.name.includes('@')).map((l) => l.name);
      assert.deepEqual(copies, ['requests@shop-a', 'token@shop-a', 'requests@shop-b', 'token@shop-b']);
      // fetch sends the permit's key; a 401 on shop-a opens its breaker and the rest go on shop-b.
      const tc2 = new TrafficControl(config, {
        fetch: async (input, init) => {
          const token = new Headers(init?.headers).get('x-bltoken');
          seen.push(token);
          return new Response('{}', { status: token === 'secret-a' ? 401 : 200 });
        },
        keys: { 'shop-a': { 'X-BLToken': 'secret-a' }, 'shop-b': { 'X-BLToken': 'secret-b' } },
      });
      seen.length = 0;
      const statuses = [];
      for (let i = 0; i < 3; i++) statuses.push((await tc2.fetch('https://api.baselinker.com/connector.php', { method: 'POST' })).status);
      assert.deepEqual(seen, ['secret-a', 'secret-b', 'secret-b']);
      assert.deepEqual(statuses, [401, 200, 200]);
    });

    test('a network failure is reported and thrown', async () => {
      const tc = new TrafficControl({ limits: { api: { kind: 'concurrency', max: 1 } }, global: ['api'] }, {
        fetch: async () => {
          throw new TypeError('fetch failed');
        },
      });
      assert.equal((await rejection(tc.fetch('http://127.0.0.1:9/x'))).message, 'fetch failed');
      assert.equal(tc.snapshot().inFlight, 0);
    });
  });
}
