// One test API for both runners: `bun test` (bun:test) and `node --test` (node:test).
const bun = typeof globalThis.Bun !== 'undefined';
const t = bun ? await import('bun:test') : await import('node:test');
// bun test stops a test after 5 s; the end-to-end ones run for longer (node --test has no limit).
if (bun) t.setDefaultTimeout(180_000);

export const test = t.test;
export const describe = t.describe;
export const before = bun ? t.beforeAll : t.before;
export const after = bun ? t.afterAll : t.after;
export const runtime = bun ? `bun ${globalThis.Bun.version}` : `node ${process.versions.node}`;
