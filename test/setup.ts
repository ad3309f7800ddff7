import { init } from '../src/index.js';

// Every test file may put tensors on 'webgpu'. Without an adapter this throws and the run fails:
// WebGPU tests never skip. The default device stays the CPU, so each test names its device.
await init({ device: 'webgpu', quiet: true });
await init({ device: 'cpu' });
