// A multi-tenant platform syncing orders through BaseLinker (100 requests a minute per API token,
// the token blocked for minutes beyond it): many shops share two tokens. The tiers give the shops
// their weights (premium 3, standard 2, basic 1); a noisy shop floods; a new shop comes in the
// middle; one token is revoked mid-run. One in-memory controller: a key pool spreads the requests
// over the tokens (a breaker per token skips a revoked one), tenants are served by weight.
//
//   node examples/baselinker-platform.mjs     (or bun): against a mock BaseLinker on 127.0.0.1,
//                                              time 60x faster (the minute is a second)
//   BASELINKER_URL=https://api.baselinker.com/connector.php BASELINKER_TOKENS=t1,t2 SCALE=1 \
//     node examples/baselinker-platform.mjs   against the real API (it only reads: getOrders)
import { fileURLToPath } from 'node:url';
import { TrafficControl } from '../index.mjs';

/** The shops sharing the tokens, by tier. The noisy one is basic too. */
export const SHOPS = { 'shop-a': 'premium', 'shop-b': 'standard', 'shop-c': 'basic', noisy: 'basic' };

/** The platform's config; `scale` shortens every duration (60: the minute is a second). */
export function platformConfig(scale = 1, tokens = ['token-1', 'token-2']) {
  const ms = (v) => v / scale;
  return {
    // 90 of BaseLinker's 100 a minute per token: a margin for the other integrations on the token.
    limits: {
      requests: { kind: 'window', max: 90, per: ms(60_000) },
      token: { kind: 'breaker', open_for: ms(30_000), max_open: ms(600_000) },
    },
    global: ['requests', 'token'],
    pools: { baselinker: { keys: tokens, limits: ['requests', 'token'] } },
    tiers: { premium: { weight: 3 }, standard: { weight: 2 }, basic: { weight: 1 } },
    tenants: Object.fromEntries([...Object.entries(SHOPS), ['shop-new', 'basic']].map(([shop, tier]) => [shop, { tier }])),
  };
}

/**
 * Runs the platform for `seconds`: every shop asks continuously (a backlog of `backlog` order
 * reads each, the noisy shop `noisy`), `shop-new` sends its first request at `newAt` s, and
 * `onRevoke(token)` is called at `revokeAt` s (the test revokes the first token on the mock then).
 * Returns what each shop sent after the first window (the first window goes to whoever asks
 * first; a request answered 401 counts too: it took the token's room), its fair share by weight,
 * the new shop's wait and how many requests went between its ask and its own go (at most one of
 * each other shop: the flood does not hold it back), the breaker events, and the requests that went
 * on a token after its breaker first opened (each a half-open probe, or a breaker did not do its
 * job), all in the core's own order of events.
 */
export async function runPlatform({ url, tokens, scale = 60, seconds = 5, backlog = 1500, noisy = 4000, newAt = 1.5, revokeAt = 2.5, onRevoke = () => {} }) {
  const ids = tokens.map((_, i) => `token-${i + 1}`);
  const events = [];
  const windowMs = 60_000 / scale;
  // The core's admissions in order: how many went between the new shop's ask and its go, and
  // which went on a token whose breaker had opened (only its half-open probes may).
  let goes = 0;
  let newAsked;
  let newRequest;
  let newAhead = 0;
  const opened = new Set();
  const afterOpen = new Map();
  const started = performance.now();
  let firstSend;
  const served = Object.fromEntries(Object.keys(SHOPS).map((s) => [s, 0]));
  const tc = new TrafficControl(platformConfig(scale, ids), {
    keys: Object.fromEntries(ids.map((id, i) => [id, { 'X-BLToken': tokens[i] }])),
    // Counts what each shop sends when it leaves (the controller let it go), from a window after
    // the first send on: the first window goes to whoever asked first, and the answers' instants
    // would add this process's own delays.
    fetch: (input, init) => {
      const shop = JSON.parse(new URLSearchParams(String(init?.body)).get('parameters') ?? '{}').filter_order_source;
      const at = performance.now() - started;
      firstSend ??= at;
      if (shop in served && at >= firstSend + windowMs && at <= seconds * 1000) served[shop] += 1;
      return fetch(input, init);
    },
    onEvent: (e) => {
      if (e.type.startsWith('breaker_')) {
        events.push(e);
        if (e.type === 'breaker_opened') opened.add(e.limit.split('@')[1]);
      } else if (e.type === 'queued' && newAsked !== undefined && newRequest === undefined) {
        newRequest = e.requestId;
      } else if (e.type === 'go') {
        goes += 1;
        if (newAsked !== undefined && e.requestId === newRequest) newAhead = goes - 1 - newAsked;
        if (opened.has(e.key)) afterOpen.set(e.key, (afterOpen.get(e.key) ?? 0) + 1);
      }
    },
  });
  const statuses = {};
  const ask = async (shop) => {
    // Each shop's sync reads its own orders (the shop's order source on the shared token).
    const body = new URLSearchParams({ method: 'getOrders', parameters: JSON.stringify({ filter_order_source: shop }) }).toString();
    const init = { method: 'POST', body, headers: { 'content-type': 'application/x-www-form-urlencoded' } };
    const res = await tc.fetch(url, init, { tenant: shop });
    const json = await res.json().catch(() => ({}));
    // A 401 opened the token's breaker; the shop's sync asks again later (not counted as served).
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    if (json.error_code === 'ERROR_BLOCKED_TOKEN') throw new Error(`blocked: ${json.error_message}`);
    return res.status;
  };
  const work = [];
  // The shops' backlogs interleaved, as their syncs would ask.
  const left = Object.fromEntries(Object.keys(SHOPS).map((s) => [s, s === 'noisy' ? noisy : backlog]));
  while (Object.values(left).some((n) => n > 0)) {
    for (const shop of Object.keys(SHOPS).filter((s) => left[s] > 0)) {
      left[shop] -= 1;
      work.push(ask(shop));
    }
  }
  let newWait;
  const newcomer = new Promise((resolve) => setTimeout(resolve, newAt * 1000)).then(async () => {
    const t0 = performance.now();
    newAsked = goes;
    await ask('shop-new');
    newWait = performance.now() - t0;
  });
  const revoke = new Promise((resolve) => setTimeout(resolve, revokeAt * 1000)).then(() => onRevoke(tokens[0]));
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  await Promise.all([newcomer, revoke]);
  // Stop: every request still waiting fails with CANCELLED.
  tc.close();
  const settled = await Promise.allSettled(work);
  const failures = settled.filter((s) => s.status === 'rejected' && s.reason?.code !== 'CANCELLED');
  const weights = { premium: 3, standard: 2, basic: 1 };
  const total = Object.values(served).reduce((a, b) => a + b, 0);
  const weightSum = Object.values(SHOPS).reduce((a, tier) => a + weights[tier], 0);
  const shops = Object.entries(SHOPS).map(([shop, tier]) => ({
    shop,
    weight: weights[tier],
    served: served[shop],
    share: served[shop] / total,
    fair: weights[tier] / weightSum,
  }));
  const probes = (key) => events.filter((e) => e.type === 'breaker_half_open' && e.limit === `token@${key}`).length;
  const afterRevoked = ids.filter((id) => opened.has(id)).map((id) => ({ token: id, sent: afterOpen.get(id) ?? 0, probes: probes(id) }));
  return { shops, total, newWait, newAhead, windowMs, events, statuses, afterRevoked, failures: failures.map((f) => String(f.reason)) };
}

/** The report, one line per shop. */
export function report(r) {
  const lines = [`served ${r.total} order reads in all; fair share = weight / 7 while every shop asks`];
  for (const s of r.shops) {
    const off = (100 * (s.share - s.fair)) / s.fair;
    lines.push(
      `  ${s.shop.padEnd(7)} weight ${s.weight}  served ${String(s.served).padStart(4)}  share ${(100 * s.share).toFixed(1).padStart(5)}%  fair ${(100 * s.fair).toFixed(1).padStart(5)}%  (${off >= 0 ? '+' : ''}${off.toFixed(1)}% of it)`,
    );
  }
  lines.push(`  the new shop's first request waited ${r.newWait?.toFixed(0)} ms (a window is ${r.windowMs} ms); ${r.newAhead} requests of the other shops went between its ask and its go`);
  lines.push(`  breaker events: ${r.events.map((e) => `${e.type} ${e.limit}${e.reason ? ` (${e.reason})` : ''}`).join(', ') || 'none'}`);
  for (const t of r.afterRevoked.filter((t) => t.sent > 0 || t.probes > 0)) {
    lines.push(`  sent on ${t.token} after its breaker opened: ${t.sent} (half-open probes allowed: ${t.probes})`);
  }
  lines.push(`  answers by status: ${JSON.stringify(r.statuses)}`);
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const scale = Number(process.env.SCALE ?? 60);
  let url = process.env.BASELINKER_URL;
  let tokens = (process.env.BASELINKER_TOKENS ?? 'secret-1,secret-2').split(',');
  let mock;
  if (!url) {
    const { spawnMockBaseLinker } = await import('../test/support/mock-baselinker.mjs');
    mock = await spawnMockBaseLinker({ max: 100, windowMs: 60_000 / scale, blockMs: 600_000 / scale });
    url = mock.url;
    console.log(`mock BaseLinker on ${url}: 100 a minute per token, time x${scale}; token 1 revoked at 2.5 s\n`);
  }
  const r = await runPlatform({ url, tokens, scale, onRevoke: (t) => mock?.revoke(t) });
  if (r.failures.length) console.log(`failures: ${r.failures.slice(0, 3).join('; ')}`);
  console.log(report(r));
  if (mock) {
    const stats = await mock.stats();
    console.log(`  the mock saw ${stats.requests} requests: ${stats.blocks} blocked, ${stats.unauthorized} unauthorized; busiest window per token ${tokens.map((t) => stats.busiest[t] ?? 0).join(' / ')} of 100`);
    await mock.close();
  }
}
