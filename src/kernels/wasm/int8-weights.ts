import { type Code, ModuleBuilder } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';
import { availableThreads, parallelFor } from './threads.js';

// The weight-only matmul (src/quant/weights.ts: MatMulNBits blocks of 8- or 4-bit integers with a float32 scale each)
// in WebAssembly, computing what its JavaScript form computes: per weight row n, its integers minus the block's zero
// point decoded once into float64; per input row m and block, the block's sum of x·(q − zp) in float64 (two lanes of
// f64x2, then their sum: products of a float32 and a small integer are exact in float64, so only the order of the
// additions differs from the sequential JavaScript sum), rounded to float32 and scaled in float32; the blocks added in
// float64, the bias last, stored as float32. Rows of the weight are split among the pool's threads.

/** The i32 arguments of `wq`, in order (byte addresses in the heap). */
const ARGS = ['n0', 'n1', 'm', 'k', 'bits', 'bs', 'q', 'rowBytes', 'scales', 'zps', 'bias', 'xs', 'row', 'out', 'n'] as const;

const raw = {
  load8u: (c: Code) => c.bytes.push(0x2d, 0x00, 0x00),
  f64Load: (c: Code, offset = 0) => c.bytes.push(0x2b, 0x03, offset),
  f64Store: (c: Code) => c.bytes.push(0x39, 0x03, 0x00),
  shrU: (c: Code) => c.bytes.push(0x76), // i32.shr_u
};

function emit(m: ModuleBuilder): void {
  // wq(n0, n1, m, k, bits, bs, q, rowBytes, scales, zps, bias, xs, row, out, n): out[i, j] for weight rows j in [n0, n1).
  // scales: f32 [n, k/bs]; zps: i32 [n, k/bs] (the zero point of every block); bias: f32 [n]; xs: f64 [m, k]; row: k f64 of scratch.
  m.func('wq', ARGS.map(() => 'i32' as const), [], (c) => {
    const [n0, n1, M, K, bits, bs, q, rowBytes, scales, zps, bias, xs, row, out, N] = ARGS.map((_, i) => i) as number[];
    const j = c.local('i32'), kk = c.local('i32'), i = c.local('i32'), b = c.local('i32'), nb = c.local('i32'), byte = c.local('i32');
    const xp = c.local('i32'), rp = c.local('i32'), end = c.local('i32'), acc = c.local('f64'), s = c.local('v128'), block = c.local('f64');
    c.get(K!).get(bs!).op('i32.div_s').set(nb);
    c.forRange(j, () => c.get(n0!), () => c.get(n1!), 1, () => {
      // row[k] = f64(q[j, k] − zp[j, k / bs])
      c.forRange(kk, () => c.i32(0), () => c.get(K!), 1, () => {
        c.get(q!).get(j).get(rowBytes!).op('i32.mul', 'i32.add');
        c.get(kk).get(kk).i32(1);
        raw.shrU(c);
        c.get(bits!).i32(8).op('i32.eq', 'select', 'i32.add');
        raw.load8u(c);
        c.set(byte);
        c.get(bits!).i32(4).op('i32.eq').if(() => {
          c.get(byte).get(kk).i32(1).op('i32.and').i32(2).op('i32.shl');
          raw.shrU(c);
          c.i32(15).op('i32.and').set(byte);
        });
        c.get(row!).get(kk).i32(3).op('i32.shl', 'i32.add');
        c.get(byte).get(zps!).get(j).get(nb).op('i32.mul').get(kk).get(bs!).op('i32.div_s', 'i32.add').i32(2).op('i32.shl', 'i32.add').mem('i32.load').op('i32.sub');
        c.op('f64.convert_i32_s');
        raw.f64Store(c);
      });
      c.forRange(i, () => c.i32(0), () => c.get(M!), 1, () => {
        c.f64(0).set(acc);
        c.get(xs!).get(i).get(K!).op('i32.mul').i32(3).op('i32.shl', 'i32.add').set(xp);
        c.get(row!).set(rp);
        c.forRange(b, () => c.i32(0), () => c.get(nb), 1, () => {
          // The block's sum: pairs in two f64 lanes, an odd last value alone.
          c.f64(0).simd('f64x2.splat').set(s);
          c.get(rp).get(bs!).i32(-2).op('i32.and').i32(3).op('i32.shl', 'i32.add').set(end);
          c.block((done) => c.loop((top) => {
            c.get(rp).get(end).op('i32.ge_s').brIf(done);
            c.get(s).get(xp).mem('v128.load').get(rp).mem('v128.load').simd('f64x2.mul', 'f64x2.add').set(s);
            c.get(xp).i32(16).op('i32.add').set(xp);
            c.get(rp).i32(16).op('i32.add').set(rp);
            c.br(top);
          }));
          c.get(s).lane('f64x2.extract_lane', 0).get(s).lane('f64x2.extract_lane', 1).op('f64.add').set(block);
          c.get(bs!).i32(1).op('i32.and').if(() => {
            c.get(block).get(xp);
            raw.f64Load(c);
            c.get(rp);
            raw.f64Load(c);
            c.op('f64.mul', 'f64.add').set(block);
            c.get(xp).i32(8).op('i32.add').set(xp);
            c.get(rp).i32(8).op('i32.add').set(rp);
          });
          // acc += f32(scale · f32(block))
          c.get(acc);
          c.get(scales!).get(j).get(nb).op('i32.mul').get(b).op('i32.add').i32(2).op('i32.shl', 'i32.add').mem('f32.load');
          c.get(block).op('f32.demote_f64', 'f32.mul', 'f64.promote_f32', 'f64.add').set(acc);
        });
        // out[i, j] = f32(acc + bias[j])
        c.get(out!).get(i).get(N!).op('i32.mul').get(j).op('i32.add').i32(2).op('i32.shl', 'i32.add');
        c.get(acc).get(bias!).get(j).i32(2).op('i32.shl', 'i32.add').mem('f32.load').op('f64.promote_f32', 'f64.add', 'f32.demote_f64').mem('f32.store');
      });
    });
  });
}

let wqFn: ((...args: number[]) => void) | undefined;
let runs = 0;
/** How many weight-only matmuls ran in wasm (tests check that the path ran). */
export function wasmWeightOnlyRuns(): number {
  return runs;
}

/** Multiply-adds below which a share of the rows is not worth a thread's wake-up. */
const MIN_WORK_PER_TASK = 1 << 17;

/**
 * out [m, n] (float32, row-major) = x [m, k] (its values as float64, row-major) against the blocks: q the packed
 * integers (rows of k·bits/8 bytes, where they are in `qBytes`), scales [n, k/bs] float32, zero points [n, k/bs] and bias [n].
 */
export function wasmWeightOnlyMatmul(
  xs: Float64Array, qBytes: Uint8Array, m: number, n: number, k: number, bits: 8 | 4, bs: number,
  scales: Float32Array, zps: Int32Array, bias: Float32Array, out: Float32Array,
): void {
  const h = heap();
  // Where the weight and the output live, before any allocation (a private memory's growth detaches views).
  const qDirect = h.addressOf(qBytes, 0), outDirect = h.addressOf(out, 0);
  h.reset();
  if (!wqFn) {
    const mb = new ModuleBuilder(memoryImport());
    emit(mb);
    wqFn = instantiate<{ wq: (...args: number[]) => void }>(mb.build()).wq;
  }
  runs++;
  const rowBytes = (k * bits) / 8;
  const qAt = qDirect ?? h.alloc(n * rowBytes), sAt = h.alloc(scales.length * 4), zAt = h.alloc(zps.length * 4), bAt = h.alloc(n * 4);
  const xAt = h.alloc(xs.length * 8), oAt = outDirect ?? h.alloc(m * n * 4);
  const tasks: number[][] = [];
  const parts = Math.max(1, Math.min(n, Math.floor((m * n * k) / MIN_WORK_PER_TASK), availableThreads() * 4));
  const share = Math.ceil(n / parts);
  for (let j = 0; j < n; j += share) {
    const row = h.alloc(k * 8);
    tasks.push([j, Math.min(n, j + share), m, k, bits, bs, qAt, rowBytes, sAt, zAt, bAt, xAt, row, oAt, n]);
  }
  // Views after every allocation (a private memory's growth detaches older ones).
  const buf = h.memory.buffer;
  if (qDirect === undefined) new Uint8Array(buf, qAt, n * rowBytes).set(qBytes.subarray(0, n * rowBytes));
  new Float32Array(buf, sAt, scales.length).set(scales);
  new Int32Array(buf, zAt, zps.length).set(zps);
  new Float32Array(buf, bAt, n).set(bias);
  new Float64Array(buf, xAt, xs.length).set(xs);
  parallelFor(tasks, wqFn);
  if (outDirect === undefined) out.set(new Float32Array(h.memory.buffer, oAt, m * n));
}
