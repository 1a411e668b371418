// A mock Back Market seller API on 127.0.0.1 that enforces limits the way the real one does, at
// its worst: every request is counted when it *arrives*, after a random latency we do not control
// (10-150 ms by default, before counting), in exact sliding windows; every method on /ws/listings
// counts on catalog (the seed's route map); once a window is exceeded the scope is blocked for the
// mitigation timeout and answered 429 with Retry-After. Every 429 is counted, and the most requests
// counted in any window of each limit is reported.
//
// Time can be scaled down (scale 10: windows and blocks ten times shorter) so tests stay quick;
// latency is not scaled (a network does not get faster with the test).
//
// `force(n)` answers the next n requests 429 (no Retry-After unless `retryAfter`), as a burst of
// 429s that the limits did not cause. Run as a program (`node mock-backmarket.mjs [scale]`) it
// prints {"url"} and serves until killed, with /__mock/stats, /__mock/reset and /__mock/force?n=.
import http from 'node:http';
import { pathToFileURL } from 'node:url';

export const REAL = {
  global: { max: 200, per: 10_000 },
  catalog: { max: 20, per: 10_000 },
  competitor: { max: 2, per: 1_000 },
};
const BLOCK_MS = 10_000;

/** The scopes a request counts on, by the seed's route map: every method on /ws/listings is catalog. */
export function scopesOf(method, path) {
  const s = ['global'];
  if (path.startsWith('/ws/listings')) s.push('catalog');
  if (path.startsWith('/ws/backbox/v1/competitors')) s.push('competitor');
  return s;
}

export async function startMockBackMarket({
  scale = 1,
  latency = [10, 150],
  responseLatency = [5, 30],
  listings = 100,
  originalPrice = 500,
} = {}) {
  const limits = Object.fromEntries(
    Object.entries(REAL).map(([name, l]) => [name, { max: l.max, per: l.per / scale, log: [], blockedUntil: 0 }]),
  );
  const blockMs = BLOCK_MS / scale;
  const state = new Map();
  for (let i = 1; i <= listings; i++) state.set(String(i), { id: i, price: originalPrice, original: originalPrice });
  const stats = {
    requests: 0,
    ok: 0,
    tooMany: 0,
    forced: 0,
    byScope: { global: 0, catalog: 0, competitor: 0 },
    byMethod: {},
    /** The most requests counted (at arrival) in any window, per limit. */
    peak: { global: 0, catalog: 0, competitor: 0 },
    /** The longest time a listing stayed at the probe price (ms). */
    probeMaxMs: 0,
    writes: 0,
  };
  const probeSince = new Map();
  let forced = { n: 0, retryAfter: null };
  // For the pauses a forced 429 imposed: when each answer left, how long it asked to wait and on
  // which scopes, and when every request arrived on which.
  const forcedSent = [];
  const arrivals = [];

  function admit(scopes, now) {
    for (const name of scopes) {
      const l = limits[name];
      if (now < l.blockedUntil) return { name, retryAfter: (l.blockedUntil - now) / 1000 };
    }
    for (const name of scopes) {
      const l = limits[name];
      while (l.log.length && l.log[0] <= now - l.per) l.log.shift();
      if (l.log.length >= l.max) {
        l.blockedUntil = now + blockMs;
        return { name, retryAfter: blockMs / 1000 };
      }
    }
    for (const name of scopes) {
      const l = limits[name];
      l.log.push(now);
      stats.peak[name] = Math.max(stats.peak[name], l.log.length);
    }
    return null;
  }

  const between = ([lo, hi]) => lo + Math.random() * (hi - lo);

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const path = url.pathname;
    if (path.startsWith('/__mock/')) return control(path, url, res);
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      // The request reaches the API's counter only after the network's latency.
      setTimeout(() => {
        const now = performance.now();
        const scopes = scopesOf(req.method, path);
        arrivals.push({ at: now, scopes });
        stats.requests++;
        stats.byMethod[req.method] = (stats.byMethod[req.method] ?? 0) + 1;
        let refused;
        if (forced.n > 0) {
          forced.n--;
          stats.forced++;
          refused = { name: 'forced', retryAfter: forced.retryAfter };
        } else {
          refused = admit(scopesOf(req.method, path), now);
        }
        setTimeout(() => {
          if (refused) {
            if (refused.name !== 'forced') {
              stats.tooMany++;
              stats.byScope[refused.name]++;
            }
            const h = { 'content-type': 'application/json' };
            if (refused.retryAfter != null) h['retry-after'] = refused.retryAfter.toFixed(3);
            if (refused.name === 'forced' && refused.retryAfter != null) {
              // A 429 on a route pauses the route's own limits (only the global one when it has none).
              const own = scopes.filter((x) => x !== 'global');
              forcedSent.push({ at: performance.now(), ms: refused.retryAfter * 1000, scopes: own.length ? own : scopes });
            }
            res.writeHead(429, h);
            res.end(JSON.stringify({ error: 'Too Many Requests', limit: refused.name }));
            return;
          }
          stats.ok++;
          respond(req.method, path, url, body, res);
        }, between(responseLatency));
      }, between(latency));
    });
  });

  function control(path, url, res) {
    const json = (value) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    if (path === '/__mock/stats') return json({ ...stats, atProbePrice: atProbePrice() });
    if (path === '/__mock/force') {
      force(Number(url.searchParams.get('n') ?? 1), url.searchParams.get('retryAfter'));
      return json({ forced: forced.n });
    }
    if (path === '/__mock/reset') {
      for (const l of Object.values(limits)) {
        l.log = [];
        l.blockedUntil = 0;
      }
      return json({ reset: true });
    }
    res.writeHead(404);
    res.end();
  }

  function respond(method, path, url, body, res) {
    const json = (status, value) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    let m;
    if ((m = path.match(/^\/ws\/listings\/(\d+)$/))) {
      const listing = state.get(m[1]);
      if (!listing) return json(404, { error: 'not found' });
      if (method === 'POST') {
        const price = Number(JSON.parse(body || '{}').price);
        stats.writes++;
        const now = performance.now();
        if (price === 1) probeSince.set(m[1], now);
        else if (probeSince.has(m[1])) {
          stats.probeMaxMs = Math.max(stats.probeMaxMs, now - probeSince.get(m[1]));
          probeSince.delete(m[1]);
        }
        listing.price = price;
      }
      return json(200, listing);
    }
    if (path === '/ws/listings') {
      const page = Number(url.searchParams.get('page') ?? 1);
      return json(200, { page, results: [...state.values()].slice((page - 1) * 10, page * 10) });
    }
    if ((m = path.match(/^\/ws\/backbox\/v1\/competitors\/(\d+)$/))) {
      return json(200, { listing: Number(m[1]), competitors: [{ price: 480 }, { price: 495 }, { price: 510 }] });
    }
    if (path.startsWith('/ws/orders')) return json(200, { results: [] });
    return json(404, { error: 'not found' });
  }

  /**
   * Requests that arrived on a scope while a forced 429's Retry-After ran on it, more than `graceMs`
   * after that answer left (a request already sent when it left may still arrive within the
   * network's latency and the time the client takes to record the pause): each one ignored a pause
   * the server set.
   */
  const arrivedDuringPauses = (graceMs) =>
    arrivals.filter((a) => forcedSent.some((f) => a.at >= f.at + graceMs && a.at < f.at + f.ms && a.scopes.some((x) => f.scopes.includes(x)))).length;
  const atProbePrice = () => [...state.values()].filter((l) => l.price === 1).map((l) => l.id);
  function force(n, retryAfter = null) {
    forced = { n, retryAfter: retryAfter == null ? null : Number(retryAfter) };
  }

  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    listings: state,
    /** Listings at the probe price right now. */
    atProbePrice,
    arrivedDuringPauses,
    /** How many forced 429s carried a Retry-After. */
    forcedPauses: () => forcedSent.length,
    force,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const mock = await startMockBackMarket({ scale: Number(process.argv[2] ?? 1), listings: 100_000 });
  console.log(JSON.stringify({ url: mock.url }));
}
