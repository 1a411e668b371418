// The shared store (js/test/shared.mjs, the same tests as the Node package's), run on the wasm
// module under Node with ioredis against a real redis-server.
import Redis from 'ioredis';
import { sharedTests } from '../../js/test/shared.mjs';
import * as pkg from '../index.node.mjs';

sharedTests(pkg, Redis);
