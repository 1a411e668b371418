// The one vocabulary (tests/vocabulary.json) in the JavaScript packages: the names the shipped
// types declare, the names events and errors carry at run time. Shared by the Node and wasm packages.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from './harness.mjs';

const vocabulary = JSON.parse(readFileSync(new URL('../../tests/vocabulary.json', import.meta.url), 'utf8'));
const name = (id) => vocabulary.rows.find((r) => r.id === id).typescript;

/** `pkg`: the package's exports; `types`: the text of its declarations (dist/types/*.d.ts). */
export function vocabularyTests(pkg, types) {
  const { TrafficControl, TrafficControlError, Priority } = pkg;
  describe('one vocabulary (tests/vocabulary.json)', () => {
    test('the declared names: longest wait, budget report, shared store options', () => {
      for (const id of ['max_wait', 'refill_in', 'tokens_left', 'waiter_ttl', 'on_unavailable', 'unavailable_max_wait']) {
        assert.match(types, new RegExp(`\\b${name(id)}\\??:`), `${id} is ${name(id)} in the .d.ts`);
      }
    });

    test('events: their kind and HTTP status by the table’s names; every kind of the table is declared', async () => {
      const events = [];
      const tc = new TrafficControl({ limits: { api: { kind: 'window', max: 1, per: '1s' } }, global: ['api'] }, { onEvent: (e) => events.push(e) });
      const permit = await tc.acquire({ url: '/x', [name('max_wait')]: 1000 });
      await permit.complete({ status: 200 });
      await new Promise((r) => setTimeout(r, 10));
      const completed = events.find((e) => e[name('event_kind')] === 'completed');
      assert.ok(completed, JSON.stringify(events));
      assert.equal(completed[name('response_status')], 200);
      for (const kind of vocabulary.event_kinds) assert.ok(types.includes(`'${kind}'`), `event kind ${kind} declared`);
    });

    test('the longest wait bounds an acquire; errors carry code and kind', async () => {
      const tc = new TrafficControl({ limits: { api: { kind: 'window', max: 1, per: '1h' } }, global: ['api'] });
      await tc.acquire({ url: '/x' });
      const e = await tc.acquire({ url: '/x', [name('max_wait')]: 10 }).then(() => null, (err) => err);
      assert.ok(e instanceof TrafficControlError);
      assert.ok(vocabulary.error_codes.includes(e[name('error_code')]), e.code);
      assert.equal(e[name('error_kind')], 'deadline');
      for (const code of vocabulary.error_codes) assert.ok(types.includes(`'${code}'`), `error code ${code} declared`);
    });

    test('priorities', () => {
      assert.deepEqual(Object.values(Priority), name('priorities').split(' '));
    });
  });
}
