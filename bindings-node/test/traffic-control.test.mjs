// The package's surface (js/test/surface.mjs), under `node --test` and `bun test` alike.
import { createRequire } from 'node:module';
import { surfaceTests } from '../../js/test/surface.mjs';
import * as pkg from '../index.mjs';

surfaceTests(pkg, () => createRequire(import.meta.url)('../index.cjs'));
