// The shared scenario files, replayed through the napi addon: the same decisions as the core.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { basename } from 'node:path';
import { test, describe } from '../../js/test/harness.mjs';
import { scenarioFiles, replayFile } from '../../js/test/scenarios.mjs';

const native = createRequire(import.meta.url)('../native/index.js');
const dir = fileURLToPath(new URL('../../tests/scenarios/', import.meta.url));

describe('shared scenarios', () => {
  for (const file of scenarioFiles(dir)) {
    test(basename(file, '.json'), () => replayFile(native, file));
  }
});
