// The one vocabulary (tests/vocabulary.json) in the Node/Bun package.
import { readFileSync, readdirSync } from 'node:fs';
import { vocabularyTests } from '../../js/test/vocabulary.mjs';
import * as pkg from '../index.mjs';

const dir = new URL('../dist/types/', import.meta.url);
const types = readdirSync(dir).filter((f) => f.endsWith('.d.ts')).map((f) => readFileSync(new URL(f, dir), 'utf8')).join('\n');
vocabularyTests(pkg, types);
