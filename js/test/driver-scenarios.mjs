// The shared store's driver scenarios (tests/driver/*.json) replayed through the public host layer:
// SharedTrafficControl with a scripted Redis client whose every script call the scenario answers
// (a reply, or a failure). Shared by the Node and wasm packages; the Python package replays the
// same files through its asyncio and thread hosts (bindings-py/tests/test_driver_scenarios.py).
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { describe, test } from './harness.mjs';

const dir = new URL('../../tests/driver/', import.meta.url);
const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();

/** An ioredis-shaped client whose calls wait for the scenario's answer. */
function scriptedClient() {
  const pending = [];
  let notify = () => {};
  const call = (numKeys, keysAndArgs) =>
    new Promise((resolve, reject) => {
      pending.push({ args: keysAndArgs.slice(numKeys), resolve, reject });
      notify();
    });
  return {
    client: { evalsha: (_sha, n, ...ka) => call(n, ka), eval: (_s, n, ...ka) => call(n, ka) },
    /** The next call the host makes (within 3 s). */
    async next() {
      const t0 = Date.now();
      while (pending.length === 0) {
        if (Date.now() - t0 > 3000) throw new Error('the host made no store call within 3 s');
        await new Promise((r) => {
          notify = r;
          setTimeout(r, 20);
        });
      }
      return pending.shift();
    },
    get waiting() {
      return pending.length;
    },
  };
}

function requestOf(r) {
  const out = { priority: r.priority ?? 'normal' };
  if (r.url !== undefined) out.url = r.url;
  if (r.method !== undefined) out.method = r.method;
  if (r.route !== undefined) out.route = r.route;
  if (r.cost !== undefined) out.cost = r.cost;
  return out;
}

export function driverScenarioTests(pkg) {
  const { SharedTrafficControl, TrafficControlError } = pkg;
  describe('driver scenarios through SharedTrafficControl (tests/driver)', () => {
    for (const file of files) {
      const scenario = JSON.parse(readFileSync(new URL(file, dir), 'utf8'));
      test(scenario.name, async () => {
        const store = scriptedClient();
        const tc = new SharedTrafficControl(scenario.config, { redis: store.client, account: `scenario-${scenario.name}`, wake: false, ...scenario.options });
        const runs = new Map();
        const settle = (label, promise) => {
          const started = Date.now();
          const run = { settled: false, started };
          run.promise = promise.then(
            (value) => Object.assign(run, { settled: true, value, at: Date.now() }),
            (error) => Object.assign(run, { settled: true, error, at: Date.now() }),
          );
          runs.set(label, run);
        };
        for (const [i, step] of scenario.steps.entries()) {
          const where = `${scenario.name} step ${i} (${step.op})`;
          switch (step.op) {
            case 'acquire':
              settle(step.label, tc.acquire({ ...requestOf(step.request), maxWait: step.maxWait }));
              break;
            case 'complete': {
              const run = runs.get(step.label);
              await run.promise;
              // The permit of an acquire, or of a completion's retry.
              const permit = run.value?.kind === 'retry' ? run.value.permit : run.value;
              const done = { settled: false, started: Date.now() };
              done.promise = permit.complete({ status: step.status, headers: step.headers, body: step.body }).then(
                (value) => Object.assign(done, { settled: true, value, at: Date.now() }),
                (error) => Object.assign(done, { settled: true, error, at: Date.now() }),
              );
              runs.set(`${step.label}/complete`, done);
              break;
            }
            case 'store': {
              do {
                const call = await store.next();
                assert.equal(call.args[0], step.call, `${where}: the host's call`);
                for (const arg of [step.args_include ?? []].flat()) assert.ok(call.args.includes(arg), `${where}: ${arg} not in ${JSON.stringify(call.args)}`);
                if (step.error !== undefined) call.reject(new Error(step.error));
                else call.resolve(step.reply);
                await new Promise((r) => setTimeout(r, 1));
              } while (step.until !== undefined && !runs.get(step.until).settled);
              break;
            }
            case 'expect': {
              const run = runs.get(step.label);
              await Promise.race([run.promise, new Promise((r) => setTimeout(r, 3000))]);
              assert.ok(run.settled, `${where}: ${step.label} did not settle`);
              if (step.go !== undefined) {
                assert.equal(run.error, undefined, `${where}: ${run.error}`);
                assert.equal(run.value.request, step.go, where);
              } else {
                assert.ok(run.error instanceof TrafficControlError, `${where}: ${run.error ?? 'went'}`);
                assert.equal(run.error.code, step.code, `${where}: ${run.error.message}`);
              }
              if (step.after !== undefined) assert.ok(run.at - run.started >= step.after, `${where}: settled after ${run.at - run.started} ms`);
              break;
            }
            case 'expect_done':
            case 'expect_completion': {
              const run = runs.get(`${step.label}/complete`);
              await Promise.race([run.promise, new Promise((r) => setTimeout(r, 3000))]);
              assert.ok(run.settled && run.error === undefined, `${where}: ${run.error ?? 'not done'}`);
              assert.equal(run.value?.kind, step.kind ?? 'done', where);
              if (step.go !== undefined) assert.equal(run.value.permit.request, step.go, where);
              if (step.after !== undefined) assert.ok(run.at - run.started >= step.after, `${where}: settled after ${run.at - run.started} ms`);
              break;
            }
            default:
              throw new Error(`${where}: unknown op`);
          }
        }
        await new Promise((r) => setTimeout(r, 20));
        assert.equal(store.waiting, 0, `${scenario.name}: calls left unanswered`);
        await tc.close();
      });
    }
  });
}
