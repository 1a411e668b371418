// The what-if simulator: the real core on a virtual clock, in the Node/Bun package (the wasm
// package leaves it out to keep its size). The same function as the `traffic-control-sim`
// command and Python's `traffic_control.simulate`.
import { TrafficControlError, fromNative } from './errors.js';
import { theHost } from './host.js';
import type { Config, PresetName } from './types.js';

/** A config to run: a preset name, a config object, or a preset or config with environment-style overrides. */
export type SimulatedConfig =
  | PresetName
  | Config
  | { preset: PresetName; env?: Record<string, string>; label?: string }
  | { config: Config; env?: Record<string, string>; label?: string };

/** A request as a workload sends it; `{n}` in the URL is the arrival's number. */
export interface WorkloadStep {
  method?: string;
  url?: string;
  route?: string;
  priority?: 'critical' | 'high' | 'normal' | 'low';
  cost?: number;
  /** The longest it may wait (`"30s"`). */
  max_wait?: string;
  /** Reserve a later step of the sequence (its index from 0) when this one goes; that step spends it. */
  reserve?: number;
  /** What the server's token model charges for it. */
  server_cost?: number;
}

/** Requests arriving at a rate (per second), one request or a sequence each. */
export interface WorkloadStream {
  name: string;
  tenant?: string;
  rate: number;
  arrival?: 'uniform' | 'poisson';
  start?: string;
  stop?: string;
  request?: WorkloadStep;
  sequence?: WorkloadStep[];
}

/** Many requests at one instant. */
export interface WorkloadBurst {
  name: string;
  tenant?: string;
  at: string;
  count: number;
  request?: WorkloadStep;
  sequence?: WorkloadStep[];
}

/** Who sends what, when. Durations are text (`"10m"`, `"150ms"`). */
export interface Workload {
  duration: string;
  seed?: number;
  latency?: { min: string; max: string };
  streams?: WorkloadStream[];
  bursts?: WorkloadBurst[];
}

/** How the server counts (at arrival) and answers. */
export interface ServerModel {
  name?: string;
  windows?: Array<{ name: string; path?: string; methods?: string[]; max: number; per: string; block?: string }>;
  budget?: {
    tokens: number;
    max: number;
    refill: number;
    per: string;
    costs?: Array<{ path: string; cost: number; per_value_of?: string }>;
  };
  /** `retry_after` (429 with `Retry-After`, the default) or `blocked_token` (BaseLinker, status 200). */
  answer?: 'retry_after' | 'blocked_token';
}

export interface SimulateOptions {
  /** One config, or several (`configs`) run side by side on the same workload. */
  config?: SimulatedConfig;
  configs?: SimulatedConfig[];
  /** A preset workload (`'backmarket'`, `'keepa'`, `'baselinker'`), a workload, or an event log as JSON lines. */
  workload: 'backmarket' | 'keepa' | 'baselinker' | Workload | { events: string };
  /** A preset server model, a model, or none. */
  server?: 'backmarket' | 'keepa' | 'baselinker' | ServerModel | null;
  /** Also return the self-contained HTML page with the charts. */
  html?: boolean;
  title?: string;
}

/** How long requests of one priority (or tenant) waited, in milliseconds. */
export interface SimulatedWaits {
  name: string;
  went: number;
  at_once: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  max_ms: number;
}

/** What one config did. Field names are the core's (snake_case), as in the JSON report. */
export interface SimulationReport {
  label: string;
  simulated_s: number;
  arrived: number;
  went: number;
  limits: Array<{
    name: string;
    kind: string;
    capacity: number;
    peak: number;
    utilisation_mean: number;
    utilisation_max: number;
    balance: { first: number; lowest: number; last: number } | null;
  }>;
  priorities: SimulatedWaits[];
  tenants: SimulatedWaits[];
  streams: Array<{ name: string; tenant: string | null; arrived: number; done: number; failed: number }>;
  rejections: Record<string, number>;
  retries: number;
  gave_up: number;
  rate_limited: number;
  server: {
    name: string;
    served: number;
    refused: number;
    windows: Array<{ name: string; max: number; per_s: number; peak: number; refused: number; exceeded: number }>;
    budget: { balance: number; lowest: number; refused: number } | null;
  } | null;
  notes: string[];
}

export interface Simulation {
  reports: SimulationReport[];
  /** The reports as text, side by side. */
  text: string;
  /** The HTML page, when asked. */
  html?: string;
}

/**
 * Runs each config against the workload (and the server model) on a virtual clock and reports
 * what would happen: per limit, per priority, per tenant, per stream, and the server's count.
 */
export function simulate(options: SimulateOptions): Simulation {
  const f = theHost().native.simulateJson;
  if (!f) throw new TrafficControlError('CONFIG', 'the simulator is not in the WebAssembly builds (the wasm package, the Node fallback): use the native Node/Bun addon, the Python package or the traffic-control-sim command');
  let out: string;
  try {
    out = f.call(theHost().native, JSON.stringify(options));
  } catch (e) {
    throw fromNative(e);
  }
  return JSON.parse(out) as Simulation;
}
