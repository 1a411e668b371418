// Hands a controller's metrics to prom-client (Node and Bun's Prometheus client) without depending
// on it: prom-client's registry takes any object with a name, a help text, a type and `get()`.
import type { Metrics, MetricFamily } from './types.js';

/** The part of prom-client's `Registry` this uses (prom-client 13 and later). */
export interface PromRegistry {
  registerMetric(metric: PromMetric): void;
}

/** What prom-client's registry reads of a metric at each scrape. */
export interface PromMetric {
  name: string;
  help: string;
  type: MetricFamily['type'];
  aggregator: 'sum';
  get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: Array<{ metricName: string; labels: Record<string, string>; value: number }> }>;
  reset(): void;
}

/** A controller whose metrics can be read: in memory (at once) or shared (one Redis round trip). */
export interface PromClient {
  metrics(): Metrics | Promise<Metrics>;
}

/**
 * Registers `tc`'s metric families (the names of `metricsText()`) in a prom-client registry. Each
 * scrape reads the controller once, whatever the number of families. For a shared controller it
 * returns a promise (its first reading names the families), and each scrape is one round trip.
 *
 * ```ts
 * import { Registry } from 'prom-client';
 * const registry = new Registry();
 * registerMetrics(tc, registry);            // await registerMetrics(shared, registry) for a SharedTrafficControl
 * app.get('/metrics', async () => new Response(await registry.metrics(), { headers: { 'content-type': registry.contentType } }));
 * ```
 */
export function registerMetrics(tc: { metrics(): Metrics }, registry: PromRegistry): void;
export function registerMetrics(tc: { metrics(): Promise<Metrics> }, registry: PromRegistry): Promise<void>;
export function registerMetrics(tc: PromClient, registry: PromRegistry): void | Promise<void> {
  let cached: Promise<Metrics> | undefined;
  const read = (): Promise<Metrics> => {
    if (!cached) {
      cached = Promise.resolve(tc.metrics());
      // One reading per scrape: the registry asks each family in the same turn (a shared
      // controller's reading is dropped once it has landed).
      const drop = () => queueMicrotask(() => (cached = undefined));
      cached.then(drop, drop);
    }
    return cached;
  };
  const register = (families: MetricFamily[]): void => {
    for (const family of families) {
      const { name, help, type } = family;
      registry.registerMetric({
        name,
        help,
        type,
        aggregator: 'sum',
        async get() {
          const f = (await read()).families.find((x) => x.name === name);
          const values = (f?.samples ?? []).map((s) => ({ metricName: s.name, labels: s.labels, value: s.value }));
          return { name, help, type, aggregator: 'sum', values };
        },
        reset() {},
      });
    }
  };
  const first = tc.metrics();
  if (first instanceof Promise) return first.then((m) => register(m.families));
  register(first.families);
}
