// A Cloudflare Worker whose outgoing fetches go through traffic-control with the limit state in
// Redis: every isolate (and every Node, Bun or Python process using the same account) counts
// against the same limits. Redis is reached over TCP with `cloudflare:sockets` `connect()`,
// through the npm package redis-on-workers.
//
// Workers do not let one request use another request's socket, so each request opens its own
// connection and its own SharedTrafficControl (cheap: the state lives in Redis).
//
// Bindings: API_URL (text: the API's base URL), REDIS_URL (text: redis://host:port),
// TRAFFIC_CONTROL_ACCOUNT (text: the account the limits belong to), TRAFFIC_CONTROL_CONFIG (json: a
// config object, or a preset name such as "backmarket"; preset overrides come from the worker's
// other bindings).
import { connect } from 'cloudflare:sockets';
import { createRedis } from 'redis-on-workers';
import { SharedTrafficControl, TrafficControlError } from 'traffic-control-wasm';

/**
 * The client SharedTrafficControl expects (ioredis's `evalsha`/`eval`) over redis-on-workers.
 * Its commands run one after another: redis-on-workers matches a reply to the latest command in
 * flight, so overlapping commands on one connection could get each other's replies.
 */
function redisClient(url) {
  const redis = createRedis({ url, connectFn: connect });
  let last = Promise.resolve();
  const send = (...command) => {
    const reply = last.then(() => redis.send(...command));
    last = reply.catch(() => undefined);
    return reply;
  };
  return {
    evalsha: (sha, numKeys, ...keysAndArgs) => send('EVALSHA', sha, numKeys, ...keysAndArgs),
    eval: (script, numKeys, ...keysAndArgs) => send('EVAL', script, numKeys, ...keysAndArgs),
    close: () => last.then(() => redis.close()),
  };
}

export default {
  async fetch(request, env, ctx) {
    const redis = redisClient(env.REDIS_URL);
    try {
      const tc = new SharedTrafficControl(env.TRAFFIC_CONTROL_CONFIG, { redis, account: env.TRAFFIC_CONTROL_ACCOUNT, env });
      const url = new URL(request.url);
      if (url.pathname === '/__traffic-control') return Response.json({ snapshot: await tc.snapshot() });
      const options = { url: url.pathname, priority: url.searchParams.get('priority') ?? 'normal', maxWait: 10_000 };
      const response = await tc.schedule(options, () => fetch(`${env.API_URL}${url.pathname}${url.search}`));
      return new Response(response.body, { status: response.status, headers: response.headers });
    } catch (e) {
      if (e instanceof TrafficControlError) return Response.json({ code: e.code, message: e.message }, { status: 503 });
      throw e;
    } finally {
      ctx.waitUntil(redis.close());
    }
  },
};
