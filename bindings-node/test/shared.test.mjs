// The shared store (js/test/shared.mjs, the same tests as the wasm package's) under node --test and
// bun test, against a real redis-server.
import Redis from 'ioredis';
import { sharedTests } from '../../js/test/shared.mjs';
import * as pkg from '../index.mjs';

sharedTests(pkg, Redis);
