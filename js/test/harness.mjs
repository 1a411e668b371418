// One test API for both runners: `bun test` (bun:test) and `node --test` (node:test).
const bun = typeof globalThis.Bun !== 'undefined';
const t = bun ? await import('bun:test') : await import('node:test');

export const test = t.test;
export const describe = t.describe;
export const before = bun ? t.beforeAll : t.before;
export const after = bun ? t.afterAll : t.after;
export const runtime = bun ? `bun ${globalThis.Bun.version}` : `node ${process.versions.node}`;

/** A test that runs for longer than bun test's 5 s default (node --test has no default limit). */
export const slowTest = (name, fn, timeoutMs = 180_000) =>
  bun ? t.test(name, fn, timeoutMs) : t.test(name, { timeout: timeoutMs }, fn);
