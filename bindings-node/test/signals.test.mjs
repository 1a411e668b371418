// Signals the server sends in a body with status 200 reach the core through every host path:
// BaseLinker's blocked token (`ERROR_BLOCKED_TOKEN`, status 200, JSON) pauses the token's limit
// after `fetch`, after `schedule` (a task returning the Response) and after the shared store's
// `schedule`; a file body (not JSON) is left unread.
import assert from 'node:assert/strict';
import http from 'node:http';
import Redis from 'ioredis';
import { test } from '../../js/test/harness.mjs';
import { startRedis } from '../../js/test/redis-server.mjs';
import { SharedTrafficControl, TrafficControl } from '../index.mjs';

const BLOCKED = JSON.stringify({ status: 'ERROR', error_code: 'ERROR_BLOCKED_TOKEN', error_message: 'Token blocked for too many requests' });

function startMock() {
  const seen = { reads: 0 };
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/file')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(Buffer.alloc(1024));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(BLOCKED);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${server.address().port}`, close: () => server.close(), seen })));
}

// A blocked token is rate limited: without this, fetch would send it again after the cooldown.
const NO_RETRY = { BASELINKER_RATE_LIMIT_FEEDBACK_MAX_RETRIES: '0' };

const paused = (snapshot) => snapshot.limits.find((l) => l.name === 'requests')?.pause;

test('a BaseLinker block at status 200 pauses the token through fetch and schedule', async () => {
  const mock = await startMock();
  try {
    const tc = new TrafficControl('baselinker', { env: NO_RETRY });
    const res = await tc.fetch(`${mock.url}/connector.php`, { method: 'POST' });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).error_code, 'ERROR_BLOCKED_TOKEN', 'the caller still reads the body');
    assert.equal(paused(tc.snapshot())?.reason, 'cooldown', JSON.stringify(tc.snapshot()));

    const tc2 = new TrafficControl('baselinker', { env: NO_RETRY });
    await tc2.schedule({ url: `${mock.url}/connector.php`, method: 'POST' }, () => fetch(`${mock.url}/connector.php`, { method: 'POST' }));
    assert.equal(paused(tc2.snapshot())?.reason, 'cooldown');

    const tc3 = new TrafficControl('baselinker', { env: NO_RETRY });
    await tc3.schedule({ url: `${mock.url}/connector.php`, method: 'POST' }, () => fetch(`${mock.url}/file`));
    assert.equal(paused(tc3.snapshot()), null, 'a file is not read');
  } finally {
    mock.close();
  }
});

test('a BaseLinker block at status 200 pauses the token for every process through the shared store', async () => {
  const mock = await startMock();
  const redis = await startRedis();
  const client = new Redis(redis.port);
  try {
    const tc = new SharedTrafficControl('baselinker', { redis: client, account: 'bl-200', env: NO_RETRY });
    await tc.schedule({ url: `${mock.url}/connector.php`, method: 'POST' }, () => fetch(`${mock.url}/connector.php`, { method: 'POST' }));
    const snap = await tc.snapshot();
    assert.equal(paused(snap)?.reason, 'cooldown', JSON.stringify(snap));
    await tc.close();
  } finally {
    client.disconnect();
    await redis.stop();
    mock.close();
  }
});

test('the shared fetch sends a rate-limited request again on the retry permit, and reads a BaseLinker block at 200', async () => {
  const arrivals = [];
  const flaky = http.createServer((req, res) => {
    arrivals.push(performance.now());
    const limited = arrivals.length % 2 === 1;
    res.writeHead(limited ? 429 : 200, { 'content-type': 'application/json', ...(limited ? { 'retry-after': '0.2' } : {}) });
    res.end(limited ? '{"ok":false}' : '{"ok":true}');
  });
  await new Promise((r) => flaky.listen(0, '127.0.0.1', r));
  const mock = await startMock();
  const redis = await startRedis();
  const client = new Redis(redis.port);
  try {
    const cfg = { limits: { api: { kind: 'window', max: 100, per: '1s', hold: 'go' } }, global: ['api'] };
    const tc = new SharedTrafficControl(cfg, { redis: client, account: 'fetch-retry' });
    const res = await tc.fetch(`http://127.0.0.1:${flaky.address().port}/items`, undefined, { priority: 'high' });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
    assert.equal(arrivals.length, 2);
    assert.ok(arrivals[1] - arrivals[0] >= 190, `sent again after the store's pause: ${arrivals[1] - arrivals[0]} ms`);
    await tc.close();

    const bl = new SharedTrafficControl('baselinker', { redis: client, account: 'bl-fetch', env: NO_RETRY });
    const blocked = await bl.fetch(`${mock.url}/connector.php`, { method: 'POST' });
    assert.equal((await blocked.json()).error_code, 'ERROR_BLOCKED_TOKEN', 'the caller still reads the body');
    assert.equal(paused(await bl.snapshot())?.reason, 'cooldown');
    await bl.close();
  } finally {
    client.disconnect();
    await redis.stop();
    mock.close();
    flaky.close();
  }
});

test('a long-lived AbortSignal keeps no listener per request once each settled', async () => {
  const { getEventListeners } = await import('node:events');
  const redis = await startRedis();
  const client = new Redis(redis.port);
  try {
    const tc = new SharedTrafficControl({ limits: { api: { kind: 'window', max: 1000, per: '1s', hold: 'go' } }, global: ['api'] }, { redis: client, account: 'signal-listeners' });
    const shutdown = new AbortController();
    for (let i = 0; i < 50; i++) await (await tc.acquire({ url: '/x', signal: shutdown.signal })).complete({ status: 200 });
    assert.equal(getEventListeners(shutdown.signal, 'abort').length, 0);
    await tc.close();
  } finally {
    client.disconnect();
    await redis.stop();
  }
});
