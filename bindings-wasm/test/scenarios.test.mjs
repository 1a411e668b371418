// The shared scenario files, replayed through both wasm builds (native/ and the browser's
// native-browser/): the same decisions as the core and the napi addon.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { basename } from 'node:path';
import { test, describe } from '../../js/test/harness.mjs';
import { scenarioFiles, replayFile } from '../../js/test/scenarios.mjs';
import * as full from '../native/traffic_control_wasm.js';
import * as browser from '../native-browser/traffic_control_wasm.js';

const dir = fileURLToPath(new URL('../../tests/scenarios/', import.meta.url));

for (const [name, native] of [['native', full], ['native-browser', browser]]) {
  native.initSync({ module: readFileSync(new URL(`../${name}/traffic_control_wasm_bg.wasm`, import.meta.url)) });
  describe(`shared scenarios (${name})`, () => {
    for (const file of scenarioFiles(dir)) {
      test(basename(file, '.json'), () => replayFile(native, file));
    }
  });
}
