// The one vocabulary (tests/vocabulary.json) in the wasm package, run on the wasm module under Node.
import { readFileSync, readdirSync } from 'node:fs';
import { vocabularyTests } from '../../js/test/vocabulary.mjs';
import * as pkg from '../index.node.mjs';

const dir = new URL('../dist/types/', import.meta.url);
const types = readdirSync(dir).filter((f) => f.endsWith('.d.ts')).map((f) => readFileSync(new URL(f, dir), 'utf8')).join('\n');
vocabularyTests(pkg, types);
