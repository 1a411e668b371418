// The driver scenarios (tests/driver) through the Node package's SharedTrafficControl.
import { driverScenarioTests } from '../../js/test/driver-scenarios.mjs';
import * as pkg from '../index.mjs';

driverScenarioTests(pkg);
