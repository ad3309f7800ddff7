// Runs in the page (test/browser.test.ts serves it beside the library bundle as /sinter.js): opens
// WebGPU through navigator.gpu and checks a representative op of each family on 'webgpu' against the
// CPU backend of the same bundle, and against a few values worked out by hand.
import * as sn from '/sinter.js';

// GPU vs CPU, both float32: sums of up to 45 products (matmul, conv2d) and exp/log differ in
// accumulation order and last-ulp rounding, so allow a few float32 ulps relative to the value.
const AGREE = { rtol: 1e-4, atol: 1e-5 };
// Hand-worked values are small integers or simple fractions; only exp's rounding remains.
const EXACT = { rtol: 1e-6, atol: 1e-6 };

/** Problems (empty when fine) comparing `got` (a webgpu tensor) with the expected shape and values. */
async function compare(what, got, wantShape, want, tol) {
  const problems = [];
  if (got.device !== 'webgpu') problems.push(`${what}: ran on ${got.device}, not webgpu`);
  if (JSON.stringify(got.shape) !== JSON.stringify(wantShape)) return [...problems, `${what}: shape [${got.shape}], expected [${wantShape}]`];
  const g = await got.data();
  let worst = null;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(g[i] - want[i]);
    if (!(err <= tol.atol + tol.rtol * Math.abs(want[i])) && (!worst || err > worst.err)) worst = { i, err, got: g[i], want: want[i] };
  }
  if (worst) problems.push(`${what}: element ${worst.i} is ${worst.got}, expected ${worst.want} (|diff| ${worst.err.toExponential(2)})`);
  return problems;
}

/** Runs `fn` on CPU inputs and on the same inputs moved to webgpu, and compares. */
async function agree(what, inputs, fn) {
  const want = fn(...inputs);
  const got = fn(...inputs.map((t) => t.to('webgpu')));
  return compare(`${what} vs cpu`, got, want.shape, await want.data(), AGREE);
}

/** Runs `fn` on webgpu tensors made from nested arrays and compares with a hand-worked result. */
async function byHand(what, arrays, fn, wantShape, want) {
  return compare(`${what} by hand`, fn(...arrays.map((a) => sn.tensor(a, { dtype: 'float32', device: 'webgpu' }))), wantShape, want, EXACT);
}

const randn = (shape, seed) => sn.randn(shape, { seed, device: 'cpu' });

const CHECKS = {
  async 'elementwise with broadcast'() {
    return [
      ...(await agree('(x·y + 1) with x [2, 3, 1], y [1, 4]', [randn([2, 3, 1], 1), randn([1, 4], 2)], (x, y) => sn.add(sn.mul(x, y), 1))),
      ...(await agree('maximum(a.t(), b) with a [5, 4], b [5]', [randn([5, 4], 3), randn([5], 4)], (a, b) => sn.maximum(a.t(), b))),
      ...(await byHand('[[1, 2, 3]] + [[10], [20]]', [[[1, 2, 3]], [[10], [20]]], (a, b) => sn.add(a, b), [2, 3], [11, 12, 13, 21, 22, 23])),
    ];
  },
  async reduction() {
    return [
      ...(await agree('sum(x [7, 33], dim 1)', [randn([7, 33], 5)], (x) => sn.sum(x, 1))),
      ...(await agree('sum(x [7, 33].t(), dim 0, keepdim)', [randn([7, 33], 6)], (x) => sn.sum(x.t(), 0, true))),
      ...(await byHand('sum([[1, 2, 3], [4, 5, 6]], dim 1)', [[[1, 2, 3], [4, 5, 6]]], (x) => sn.sum(x, 1), [2], [6, 15])),
      ...(await byHand('sum of all of [[1, 2, 3], [4, 5, 6]]', [[[1, 2, 3], [4, 5, 6]]], (x) => sn.sum(x), [], [21])),
    ];
  },
  async matmul() {
    return [
      ...(await agree('[37, 45] @ [45, 29]', [randn([37, 45], 7), randn([45, 29], 8)], (a, b) => sn.matmul(a, b))),
      ...(await agree('[2, 5, 7] @ [3, 7].t() (batched, transposed view)', [randn([2, 5, 7], 9), randn([3, 7], 10)], (a, b) => sn.matmul(a, b.t()))),
      ...(await byHand('[[1, 2], [3, 4]] @ [[5, 6], [7, 8]]', [[[1, 2], [3, 4]], [[5, 6], [7, 8]]], (a, b) => sn.matmul(a, b), [2, 2], [19, 22, 43, 50])),
    ];
  },
  async conv2d() {
    const x4 = [[Array.from({ length: 4 }, (_, i) => Array.from({ length: 4 }, (_, j) => 4 * i + j))]];
    return [
      ...(await agree('x [2, 3, 9, 9] * w [4, 3, 3, 3] + bias, stride 2, padding 1', [randn([2, 3, 9, 9], 11), randn([4, 3, 3, 3], 12), randn([4], 13)], (x, w, b) =>
        sn.conv2d(x, w, b, { stride: 2, padding: 1 }),
      )),
      // out[i][j] = x[i][j] + x[i][j+1] + x[i+1][j] + x[i+1][j+1] = 16i + 4j + 10 for x[i][j] = 4i + j
      ...(await byHand('arange(16) [1, 1, 4, 4] * ones [1, 1, 2, 2]', [x4, [[[[1, 1], [1, 1]]]]], (x, w) => sn.conv2d(x, w), [1, 1, 3, 3], [10, 14, 18, 26, 30, 34, 42, 46, 50])),
    ];
  },
  async softmax() {
    return [
      ...(await agree('softmax(x [6, 50], dim -1)', [randn([6, 50], 14)], (x) => sn.softmax(x, -1))),
      ...(await agree('softmax(x [5, 7], dim 0)', [randn([5, 7], 15)], (x) => sn.softmax(x, 0))),
      // softmax([0, ln 2, ln 3]) = [1, 2, 3] / 6; a row of equal values gives equal shares
      ...(await byHand('softmax([[0, ln 2, ln 3], [10, 10, 10]], dim 1)', [[[0, Math.LN2, Math.log(3)], [10, 10, 10]]], (x) => sn.softmax(x, 1), [2, 3], [1 / 6, 2 / 6, 3 / 6, 1 / 3, 1 / 3, 1 / 3])),
    ];
  },
};

/** Opens WebGPU and runs every check; each op's outcome is its list of problems or the error it threw. */
export async function runChecks() {
  if (!navigator.gpu) throw new Error('this page has no navigator.gpu');
  const device = await sn.init({ device: 'webgpu', quiet: true });
  const info = sn.adapterInfo();
  const results = {};
  for (const [name, check] of Object.entries(CHECKS)) {
    try {
      results[name] = { problems: await check() };
    } catch (e) {
      results[name] = { error: String(e?.stack ?? e) };
    }
  }
  return { device, line: info?.line ?? null, results };
}

export const OPS = Object.keys(CHECKS);
