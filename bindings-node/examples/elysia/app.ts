// A Back Market repricing backend on Bun + Elysia, every outgoing call scheduled by traffic-control.
//
//   POST /backmarket/probe/:listingId    Dip (price 1, reserving the Peak) -> Peek (competitors) -> Peak (restore)
//   POST /backmarket/recover/:listingId  emergency revert to a given price (CRITICAL)
//   GET  /backmarket/scan/:page          watchdog scan of the catalog (LOW)
//   GET  /backmarket/status              the limits, as traffic-control sees them
//
// Environment: BACKMARKET_URL (the API base), BACKMARKET_TOKEN, PORT (0: any free port), and the
// preset's overrides (BM_RATE_LIMIT_CATALOG_MAX_REQUESTS, BM_RATE_LIMIT_CATALOG_INTERVAL_MS, ...).
import { Elysia } from 'elysia';
import { Priority, TrafficControl, TrafficControlError, type RequestOptions } from 'traffic-control';

const BASE = process.env.BACKMARKET_URL ?? 'https://www.backmarket.fr';
const headers = {
  Authorization: `Basic ${process.env.BACKMARKET_TOKEN ?? ''}`,
  Accept: 'application/json',
  'Content-Type': 'application/json',
};
const tc = new TrafficControl('backmarket'); // limits from the preset, overrides from process.env

const api = (path: string, init: RequestInit = {}, options: RequestOptions = {}) =>
  tc.fetch(`${BASE}${path}`, { ...init, headers }, options);

async function json(res: Response, what: string) {
  if (!res.ok) throw new Error(`${what}: HTTP ${res.status}`);
  return res.json();
}

const setPrice = (id: string, price: number, options: RequestOptions) =>
  api(`/ws/listings/${id}`, { method: 'POST', body: JSON.stringify({ price }) }, options);

async function probe(id: string) {
  const listing = await json(await api(`/ws/listings/${id}`, {}, { priority: Priority.NORMAL }), 'read listing');
  const original: number = listing.price;
  // The Dip may go only with capacity for the Peak reserved in the same admission.
  const peak = tc.reservation({ method: 'POST', url: `${BASE}/ws/listings/${id}` });
  const dip = await setPrice(id, 1, { priority: Priority.NORMAL, reserve: [peak] });
  if (!dip.ok) {
    peak.release(); // the listing never left its price: give the Peak's capacity back
    throw new Error(`dip: HTTP ${dip.status}`);
  }
  try {
    return { listingId: Number(id), original, competitors: (await json(await api(`/ws/backbox/v1/competitors/${id}`, {}, { priority: Priority.HIGH }), 'peek')).competitors };
  } finally {
    // The Peak goes whatever the Peek did, on its reservation: the listing never stays at 1 EUR.
    await json(await setPrice(id, original, { priority: Priority.HIGH, spend: peak }), 'peak');
  }
}

function failure(e: unknown, set: { status?: number | string }) {
  if (e instanceof TrafficControlError) {
    set.status = e.kind === 'queue_full' || e.kind === 'budget' || e.kind === 'deadline' ? 503 : 500;
    return { error: e.code, message: e.message };
  }
  set.status = 502;
  return { error: 'UPSTREAM', message: String((e as Error)?.message ?? e) };
}

const app = new Elysia()
  .post('/backmarket/probe/:listingId', async ({ params, set }) => {
    try {
      return await probe(params.listingId);
    } catch (e) {
      return failure(e, set);
    }
  })
  .post('/backmarket/recover/:listingId', async ({ params, body, set }) => {
    try {
      const price = Number((body as { price?: number } | undefined)?.price);
      return await json(await setPrice(params.listingId, price, { priority: Priority.CRITICAL }), 'recover');
    } catch (e) {
      return failure(e, set);
    }
  })
  .get('/backmarket/scan/:page', async ({ params, set }) => {
    try {
      return await json(await api(`/ws/listings?page=${params.page}`, {}, { priority: Priority.LOW, maxWait: 60_000 }), 'scan');
    } catch (e) {
      return failure(e, set);
    }
  })
  .get('/backmarket/status', () => tc.snapshot())
  // Prometheus scrapes this: the core's counters and gauges in the text format.
  .get('/metrics', ({ set }) => {
    set.headers['content-type'] = 'text/plain; version=0.0.4; charset=utf-8';
    return tc.metricsText();
  })
  // LOW scans may wait behind the probes for up to their maxWait (60 s): keep idle connections open.
  .listen({ port: Number(process.env.PORT ?? 3000), hostname: '127.0.0.1', idleTimeout: 255 });

console.log(JSON.stringify({ listening: `http://127.0.0.1:${app.server!.port}` }));
