// A rate-limited API on 127.0.0.1 that enforces its limit the way real APIs do: it counts requests
// at arrival in an exact sliding window, answers 429 with Retry-After past the limit, and counts
// those violations.
import { createServer } from 'node:http';

/** Starts the API: at most `max` requests in any `perMs` milliseconds, `latencyMs` per answer. */
export async function startMockApi({ max, perMs, latencyMs = 5 }) {
  const arrivals = [];
  const stats = { served: 0, violations: 0, peak: 0 };
  const server = createServer((req, res) => {
    const now = performance.now();
    while (arrivals.length && arrivals[0] <= now - perMs) arrivals.shift();
    if (arrivals.length >= max) {
      stats.violations++;
      res.writeHead(429, { 'retry-after': String(Math.ceil(perMs / 1000)) }).end('{"error":"rate limited"}');
      return;
    }
    arrivals.push(now);
    stats.peak = Math.max(stats.peak, arrivals.length);
    setTimeout(() => {
      stats.served++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ path: req.url }));
    }, latencyMs);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stats,
    close: () => new Promise((r) => server.close(r)),
  };
}
