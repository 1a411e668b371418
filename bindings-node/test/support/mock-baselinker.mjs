// A mock BaseLinker connector on 127.0.0.1 (POST /connector.php, the token in X-BLToken) that
// enforces its limit the way the real one does, at its worst: each request is counted when it
// *arrives*, after a random latency we do not control (before counting), in exact sliding windows
// of `max` per `windowMs` per token (100 a minute, time scaled); a request over it is answered
// `ERROR_BLOCKED_TOKEN ... blocked until <Polish time>` with status 200, and the token is blocked
// for `blockMs` (10 minutes, time scaled). A revoked token gets 401. It counts the requests, the
// blocks, the 401s and each token's arrivals.
//
// `spawnMockBaseLinker` runs it in a child process (the runtime running the caller: node or bun),
// so that its latency and its counting do not share the caller's event loop; the caller reads its
// counts and revokes a token through /__mock/stats and /__mock/revoke?token=.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** BaseLinker writes its times in Polish time (UTC+1 in winter). */
function polish(ms) {
  return new Date(ms + 3_600_000).toISOString().slice(0, 19).replace('T', ' ');
}

export async function startMockBaseLinker({ max = 100, windowMs = 60_000, blockMs = 600_000, latency = [10, 60] } = {}) {
  const arrivals = new Map(); // token -> arrival instants (ms, performance.now)
  const blockedUntil = new Map();
  const revoked = new Set();
  const stats = { requests: 0, blocks: 0, unauthorized: 0 };
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/__mock/')) return control(req, res);
    const token = String(req.headers['x-bltoken'] ?? '');
    req.resume();
    req.on('end', () => {
      const [lo, hi] = latency;
      setTimeout(() => {
        const now = performance.now();
        stats.requests += 1;
        const reply = (status, body) => {
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        };
        if (revoked.has(token)) {
          stats.unauthorized += 1;
          return reply(401, { status: 'ERROR', error_code: 'ERROR_AUTH', error_message: 'invalid token' });
        }
        const log = arrivals.get(token) ?? [];
        arrivals.set(token, log);
        let recent = 0;
        for (let i = log.length - 1; i >= 0 && log[i] > now - windowMs; i--) recent += 1;
        if (now < (blockedUntil.get(token) ?? 0) || recent >= max) {
          stats.blocks += 1;
          const until = Math.max(blockedUntil.get(token) ?? 0, now + blockMs);
          blockedUntil.set(token, until);
          const wall = Date.now() + (until - now);
          return reply(200, { status: 'ERROR', error_code: 'ERROR_BLOCKED_TOKEN', error_message: `Token blocked until ${polish(wall)}` });
        }
        log.push(now);
        reply(200, { status: 'SUCCESS', orders: [] });
      }, lo + Math.random() * (hi - lo));
    });
  });
  /** The most arrivals on `token` in any window. */
  const busiest = (token) => {
    const log = arrivals.get(token) ?? [];
    let most = 0;
    for (let i = 0, j = 0; i < log.length; i++) {
      while (log[j] <= log[i] - windowMs) j++;
      most = Math.max(most, i - j + 1);
    }
    return most;
  };
  function control(req, res) {
    const url = new URL(req.url, 'http://mock');
    if (url.pathname === '/__mock/revoke') revoked.add(url.searchParams.get('token'));
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ...stats, busiest: Object.fromEntries([...arrivals.keys()].map((t) => [t, busiest(t)])) }));
  }
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/connector.php`,
    stats,
    busiest,
    revoke(token) {
      revoked.add(token);
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/** The mock in a child process: `{ url, stats(), revoke(token), close() }`. */
export async function spawnMockBaseLinker(options = {}) {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const { url } = await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the mock BaseLinker exited (${code})`)));
    lines.once('line', (line) => resolve(JSON.parse(line)));
  });
  const base = new URL('/__mock/', url);
  const call = async (path) => (await fetch(new URL(path, base))).json();
  return {
    url,
    stats: () => call('stats'),
    revoke: (token) => call(`revoke?token=${encodeURIComponent(token)}`),
    close: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.kill();
      }),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const mock = await startMockBaseLinker(JSON.parse(process.argv[2] ?? '{}'));
  console.log(JSON.stringify({ url: mock.url }));
}
