// The host runtime behind the scheduler, set once by each package's entry point (napi or wasm).
import type { Host } from './types.js';

let host: Host | undefined;

/** Sets the native side, the clock and the environment. Called by the package entry point only. */
export function setHost(h: Host): void {
  host = h;
}

/** The host, or a clear error when the shared code was imported without an entry point. */
export function theHost(): Host {
  if (!host) throw new Error('traffic-control: no native backend loaded (import the package, not its dist files)');
  return host;
}
