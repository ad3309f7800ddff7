import { init } from '../src/index.js';
import { setCpuKernels } from '../src/backend/cpu.js';

// Every test file may put tensors on 'webgpu'. Without an adapter this throws and the run fails:
// WebGPU tests never skip. The default device stays the CPU, so each test names its device.
await init({ device: 'webgpu', quiet: true });
await init({ device: 'cpu' });

// SINTER_CPU_KERNELS=js runs every CPU test on the JavaScript reference kernels instead of the WebAssembly ones
// (`npm run test:js`): the property tests then check the reference path as well.
if (process.env.SINTER_CPU_KERNELS === 'js' && setCpuKernels('js') !== 'js') throw new Error('could not select the JavaScript CPU kernels');
