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

/** A controller, in-memory or shared, whose metrics can be read. */
export interface PromClient {
  metrics(): Metrics;
}

/**
 * Registers `tc`'s metric families (the names of `metricsText()`) in a prom-client registry. Each
 * scrape reads the controller once, whatever the number of families.
 *
 * ```ts
 * import { Registry } from 'prom-client';
 * const registry = new Registry();
 * registerMetrics(tc, registry);
 * app.get('/metrics', async () => new Response(await registry.metrics(), { headers: { 'content-type': registry.contentType } }));
 * ```
 */
export function registerMetrics(tc: PromClient, registry: PromRegistry): void {
  let cached: Metrics | undefined;
  const read = (): Metrics => {
    if (!cached) {
      cached = tc.metrics();
      // One reading per scrape: the registry asks each family in the same turn.
      queueMicrotask(() => (cached = undefined));
    }
    return cached;
  };
  for (const family of tc.metrics().families) {
    const { name, help, type } = family;
    registry.registerMetric({
      name,
      help,
      type,
      aggregator: 'sum',
      async get() {
        const f = read().families.find((x) => x.name === name);
        const values = (f?.samples ?? []).map((s) => ({ metricName: s.name, labels: s.labels, value: s.value }));
        return { name, help, type, aggregator: 'sum', values };
      },
      reset() {},
    });
  }
}
