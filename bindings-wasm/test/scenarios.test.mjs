// The shared scenario files, replayed through both wasm builds (native/ and the browser's
// native-browser/): the same decisions as the core and the napi addon.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { basename } from 'node:path';
import assert from 'node:assert/strict';
import { test, describe } from '../../js/test/harness.mjs';
import { scenarioFiles, replayFile } from '../../js/test/scenarios.mjs';
import * as full from '../native/traffic_control_wasm.js';
import * as browser from '../native-browser/traffic_control_wasm.js';

const dir = fileURLToPath(new URL('../../tests/scenarios/', import.meta.url));

for (const [name, native] of [['native', full], ['native-browser', browser]]) {
  native.initSync({ module: readFileSync(new URL(`../${name}/traffic_control_wasm_bg.wasm`, import.meta.url)) });
  describe(`shared scenarios (${name})`, () => {
    for (const file of scenarioFiles(dir)) {
      const { config } = JSON.parse(readFileSync(file, 'utf8'));
      const keys = config.pools !== undefined || Object.values(config.limits ?? {}).some((l) => l.kind === 'breaker');
      if (name === 'native-browser' && (keys || config.tenants !== undefined)) {
        // The browser build leaves tenants, key pools and circuit breakers out: the config is
        // refused, naming the field.
        test(`${basename(file, '.json')} (refused: no tenants, key pools or breakers in this build)`, () => {
          assert.throws(() => replayFile(native, file), (e) => e.code === 'CONFIG' && /not in this build/.test(e.message));
        });
        continue;
      }
      test(basename(file, '.json'), () => replayFile(native, file));
    }
  });
}
