// A TCP proxy between clients and Redis that misbehaves on purpose, for the fault campaign
// (crossprocess.mjs, scripts/soak.sh): every chunk in either direction is delayed by a random
// 0..`delayMs` (order kept), `drop()` cuts one live connection at random (both sides, mid-command
// if one is on the wire), and `cut(ms)` cuts every connection and refuses new ones for a while, as
// a network partition does. No maintained proxy installs from the registries this machine reaches
// (toxiproxy is a Go binary; the npm packages named after it are clients of its server), and this
// needs no more than node:net.
import net from 'node:net';

export async function startFaultProxy({ port: target, host = '127.0.0.1', delayMs = 10, seed = 1 }) {
  let state = seed >>> 0 || 1;
  // xorshift32: the faults are reproducible for a seed.
  const random = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 4294967296;
  };
  const pairs = new Set();
  let refusingUntil = 0;
  const stats = { connections: 0, refused: 0, dropped: 0, cuts: 0, chunks: 0 };

  /**
   * Forwards from `from` to `to`, each chunk after a random delay, strictly in order: one queue and
   * one timer per direction (timers of different delays may fire out of order, which would swap
   * two replies on a pipelined connection).
   */
  function pipe(from, to) {
    const queue = [];
    let timer = null;
    const flush = () => {
      timer = null;
      while (queue.length > 0 && queue[0].at <= performance.now()) {
        const { chunk } = queue.shift();
        if (!to.destroyed) to.write(chunk);
      }
      if (queue.length > 0) timer = setTimeout(flush, Math.max(0, queue[0].at - performance.now()));
    };
    from.on('data', (chunk) => {
      stats.chunks++;
      const last = queue.length > 0 ? queue[queue.length - 1].at : 0;
      queue.push({ chunk, at: Math.max(last, performance.now() + random() * delayMs) });
      if (timer === null) timer = setTimeout(flush, Math.max(0, queue[0].at - performance.now()));
    });
    from.on('close', () => {
      if (timer !== null) clearTimeout(timer);
      queue.length = 0;
    });
  }

  const server = net.createServer((client) => {
    if (performance.now() < refusingUntil) {
      stats.refused++;
      client.destroy();
      return;
    }
    stats.connections++;
    const upstream = net.connect(target, host);
    const pair = { client, upstream };
    pairs.add(pair);
    const close = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));

  return {
    port: server.address().port,
    stats,
    /** Cuts one live connection at random. */
    drop() {
      const all = [...pairs];
      if (all.length === 0) return;
      const { client, upstream } = all[Math.floor(random() * all.length)];
      stats.dropped++;
      client.destroy();
      upstream.destroy();
    },
    /** Cuts every connection and refuses new ones for `ms`. */
    cut(ms) {
      stats.cuts++;
      refusingUntil = performance.now() + ms;
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
    },
    async close() {
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
