// The driver scenarios (tests/driver) through the wasm package's SharedTrafficControl.
import { driverScenarioTests } from '../../js/test/driver-scenarios.mjs';
import * as pkg from '../index.node.mjs';

driverScenarioTests(pkg);
