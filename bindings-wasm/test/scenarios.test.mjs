// The shared scenario files, replayed through the wasm module: the same decisions as the core and
// the napi addon.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { basename } from 'node:path';
import { test, describe } from '../../js/test/harness.mjs';
import { scenarioFiles, replayFile } from '../../js/test/scenarios.mjs';
import * as native from '../native/traffic_control_wasm.js';

native.initSync({ module: readFileSync(new URL('../native/traffic_control_wasm_bg.wasm', import.meta.url)) });
const dir = fileURLToPath(new URL('../../tests/scenarios/', import.meta.url));

describe('shared scenarios', () => {
  for (const file of scenarioFiles(dir)) {
    test(basename(file, '.json'), () => replayFile(native, file));
  }
});
