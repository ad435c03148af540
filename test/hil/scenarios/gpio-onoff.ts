// The onoff (sysfs) backend against the kernel's gpio-sim: the shared GPIO contract.
import { gpioContract } from '../../unit/gpio-contract.js';
import { OnoffGpio } from '../../../src/gpio/onoff.js';
import { hilEnv, simDriver } from '../lib.js';

const env = hilEnv();
gpioContract('onoff on gpio-sim', () => new OnoffGpio({}), () => simDriver(env, [2, 3]));
