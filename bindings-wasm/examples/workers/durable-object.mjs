// One account's limits for every request of a worker, wherever it runs: a Durable Object holds
// the controller (one instance per account, by name), and hands out permits over RPC. The worker
// performs its own HTTP and reports each outcome, so the object only decides when requests go.
// A caller that disappears leaks nothing: concurrency slots and reservations have lease TTLs.
//
// Bindings: ACCOUNT_LIMITS (the namespace of AccountLimits), API_URL (text),
// TRAFFIC_CONTROL_CONFIG (json: a config object or a preset name).
import { DurableObject } from 'cloudflare:workers';
import { TrafficControl } from 'traffic-control-wasm';

export class AccountLimits extends DurableObject {
  #tc;
  #permits = new Map();
  #requests = 0;

  constructor(ctx, env) {
    super(ctx, env);
    this.#tc = new TrafficControl(env.TRAFFIC_CONTROL_CONFIG, { env });
  }

  /** Waits until the request may go; returns its permit's id, or the error's code and message. */
  async acquire(request) {
    this.#requests++;
    try {
      return { permit: this.#keep(await this.#tc.acquire(request)) };
    } catch (e) {
      return { code: e.code ?? 'ERROR', message: e.message };
    }
  }

  /** Reports how the request went. When the server rate limited it, waits and returns the retry's permit. */
  async complete(id, outcome) {
    const permit = this.#permits.get(id);
    if (!permit) return { done: true };
    this.#permits.delete(id);
    const completion = await permit.complete(outcome);
    return completion.kind === 'retry' ? { permit: this.#keep(completion.permit) } : { done: true };
  }

  /** The requests it has decided on, and its limits' state. */
  state() {
    return { requests: this.#requests, snapshot: this.#tc.snapshot() };
  }

  #keep(permit) {
    this.#permits.set(permit.request, permit);
    return permit.request;
  }
}

export default {
  async fetch(request, env) {
    const limits = env.ACCOUNT_LIMITS.get(env.ACCOUNT_LIMITS.idFromName('account'));
    const url = new URL(request.url);
    if (url.pathname === '/__traffic-control') return Response.json(await limits.state());
    const target = `${env.API_URL}${url.pathname}${url.search}`;
    let { permit, code, message } = await limits.acquire({ method: request.method, url: target, maxWait: 10_000 });
    while (permit !== undefined) {
      let response;
      try {
        response = await fetch(target, { method: request.method });
      } catch (e) {
        await limits.complete(permit, {});
        throw e;
      }
      const body = await response.text();
      const next = await limits.complete(permit, { status: response.status, headers: [...response.headers] });
      if (next.done) return new Response(body, { status: response.status });
      permit = next.permit;
    }
    return Response.json({ code, message }, { status: 503 });
  },
};
