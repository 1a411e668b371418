// The package's surface (js/test/surface.mjs, the same tests as the Node package), run on the
// wasm module under Node.
import { surfaceTests } from '../../js/test/surface.mjs';
import * as pkg from '../index.node.mjs';

surfaceTests(pkg);
