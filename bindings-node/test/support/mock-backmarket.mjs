// A mock Back Market seller API on 127.0.0.1 that enforces limits the way the real one does:
// exact sliding windows counted at arrival, 429 with Retry-After and a block of the whole scope for
// the mitigation timeout once a window is exceeded, realistic latency. Every 429 is counted.
//
// Time can be scaled down (scale 10: windows and blocks ten times shorter) so tests stay quick.
import http from 'node:http';

const REAL = {
  global: { max: 200, per: 10_000 },
  catalog: { max: 20, per: 10_000 },
  competitor: { max: 2, per: 1_000 },
};
const BLOCK_MS = 10_000;

export async function startMockBackMarket({ scale = 1, latency = [20, 80], listings = 100, originalPrice = 500 } = {}) {
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
    byScope: { global: 0, catalog: 0, competitor: 0 },
    /** Peak count seen in any window, per limit. */
    peak: { global: 0, catalog: 0, competitor: 0 },
    /** Listings that were ever at the probe price, and the longest time one stayed there (ms). */
    probeMaxMs: 0,
    writes: 0,
  };
  const probeSince = new Map();

  function scopesOf(method, path) {
    const s = ['global'];
    if (method === 'POST' && path.startsWith('/ws/listings')) s.push('catalog');
    if (path.startsWith('/ws/backbox/v1/competitors')) s.push('competitor');
    return s;
  }

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

  const server = http.createServer((req, res) => {
    const now = performance.now();
    const url = new URL(req.url, 'http://x');
    const path = url.pathname;
    stats.requests++;
    const refused = admit(scopesOf(req.method, path), now);
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const [lo, hi] = latency;
      const delay = lo + Math.random() * (hi - lo);
      setTimeout(() => {
        if (refused) {
          stats.tooMany++;
          stats.byScope[refused.name]++;
          res.writeHead(429, { 'content-type': 'application/json', 'retry-after': refused.retryAfter.toFixed(3) });
          res.end(JSON.stringify({ error: 'Too Many Requests', limit: refused.name }));
          return;
        }
        stats.ok++;
        respond(req.method, path, url, body, res);
      }, delay);
    });
  });

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

  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    listings: state,
    /** Listings at the probe price right now. */
    atProbePrice: () => [...state.values()].filter((l) => l.price === 1).map((l) => l.id),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
