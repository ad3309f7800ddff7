// ONNX loader fuzzing: mutations of real models (ONNX's node test cases in ../shared/conformance/onnx-node) —
// truncations, byte flips, fields of the wrong type, dims claiming 10^12 elements, dangling and cyclic node
// references, huge attribute lists, nonsense attribute values and opsets — each loaded and run on its test inputs.
// Every case must end in a SinterError or a finished run: anything else (a TypeError, a RangeError, a native abort,
// a hang, unbounded memory) is a bug. test/onnx-fuzz.test.ts runs a few hundred cases on each device; this script
// runs thousands:
//   node scripts/fuzz-onnx.mjs [--runs N] [--seed S] [--device cpu|webgpu]   (after npm run build)
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import protobuf from 'protobufjs/light.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CASES_DIR = path.resolve(here, '..', '..', 'shared', 'conformance', 'onnx-node');

/** The models mutated: one or two per op family, chosen for variety (initializers, attributes, shape arithmetic). */
export const FUZZ_CASES = [
  'test_conv_with_strides_and_asymmetric_padding', 'test_gemm_all_attributes', 'test_reshape_negative_dim', 'test_constantofshape_int_zeros',
  'test_range_float_type_positive_delta', 'test_expand_dim_unchanged', 'test_tile', 'test_slice_negative_axes', 'test_gather_1',
  'test_maxpool_2d_pads', 'test_averagepool_2d_ceil', 'test_concat_3d_axis_2', 'test_split_variable_parts_2d_opset18',
  'test_resize_upsample_scales_linear', 'test_layer_normalization_4d_axis1', 'test_reduce_sum_keepdims_example', 'test_transpose_all_permutations_4',
  'test_softmax_axis_0_expanded', 'test_unsqueeze_two_axes', 'test_batchnorm_epsilon', 'test_convtranspose_pads', 'test_einsum_batch_matmul',
  'test_clip_default_inbounds', 'test_instancenorm_epsilon', 'test_cast_FLOAT_to_FLOAT16', 'test_attention_3d',
];

/** A loaded case: the model's bytes and its test inputs (as readOnnxTensor gives them). */
export async function loadFuzzCase(lib, name) {
  const folder = path.join(CASES_DIR, name);
  const bytes = new Uint8Array(await readFile(path.join(folder, 'model.onnx')));
  const data = path.join(folder, 'test_data_set_0');
  const files = (await readdir(data)).filter((f) => f.startsWith('input_')).sort((a, b) => parseInt(a.slice(6)) - parseInt(b.slice(6)));
  const inputs = await Promise.all(files.map(async (f) => lib.readOnnxTensor(new Uint8Array(await readFile(path.join(data, f))))));
  return { name, bytes, inputs };
}

/** Encoder and decoder for ModelProto built from the library's own schema (so mutations re-encode as valid protobuf). */
export function modelCodec(schema) {
  const root = protobuf.Root.fromJSON(schema);
  const type = root.lookupType('onnx.ModelProto');
  return {
    decode: (bytes) => type.toObject(type.decode(bytes), { longs: Number, arrays: true, bytes: Uint8Array }),
    encode: (obj) => type.encode(type.fromObject(obj)).finish(),
  };
}

const HUGE = 1e12;

/** Structural mutations of a decoded model; each gets a random number generator (fast-check's) and the model object. */
const STRUCTURAL = {
  /** An initializer (or a tensor attribute) whose dims claim 10^12 elements. */
  hugeDims(m, r) {
    const tensors = [...m.graph.initializer, ...m.graph.node.flatMap((n) => n.attribute.filter((a) => a.t).map((a) => a.t))];
    if (tensors.length === 0) return false;
    const t = tensors[r(tensors.length)];
    t.dims = [1e6, 1e6];
    return true;
  },
  /** A graph input whose declared dims are huge or negative. */
  inputDims(m, r) {
    const v = m.graph.input[r(Math.max(m.graph.input.length, 1))];
    const dims = v?.type?.tensorType?.shape?.dim;
    if (!dims?.length) return false;
    dims[r(dims.length)] = { dimValue: [HUGE, -3, 0][r(3)] };
    return true;
  },
  /** A node input that names no value. */
  dangling(m, r) {
    const nodes = m.graph.node.filter((n) => n.input.length > 0);
    if (nodes.length === 0) return false;
    const n = nodes[r(nodes.length)];
    n.input[r(n.input.length)] = 'no_such_value';
    return true;
  },
  /** A node that reads its own output, or a later node's (a cycle). */
  cyclic(m, r) {
    const nodes = m.graph.node;
    const i = r(nodes.length);
    const j = i + r(nodes.length - i);
    const n = nodes[i];
    const out = nodes[j].output[0];
    if (!out) return false;
    if (n.input.length === 0) n.input.push(out);
    else n.input[r(n.input.length)] = out;
    return true;
  },
  /** An attribute whose declared type is another one (an int read as a list, a graph…), or whose value is missing. */
  wrongAttrType(m, r) {
    const attrs = m.graph.node.flatMap((n) => n.attribute);
    if (attrs.length === 0) return false;
    const a = attrs[r(attrs.length)];
    a.type = [1, 2, 3, 4, 5, 6, 7, 8, 0, 99][r(10)];
    return true;
  },
  /** Attribute values out of any sensible range: huge, negative, empty lists, NaN. */
  badAttrValue(m, r) {
    const attrs = m.graph.node.flatMap((n) => n.attribute);
    if (attrs.length === 0) return false;
    const a = attrs[r(attrs.length)];
    const pick = [HUGE, -HUGE, -1, 0, 2 ** 31, NaN][r(6)];
    if (a.ints?.length) a.ints = a.ints.map(() => pick);
    else if (a.floats?.length) a.floats = a.floats.map(() => pick);
    else if (a.type === 2 || a.i !== undefined) a.i = Number.isNaN(pick) ? -7 : pick;
    else if (a.type === 1 || a.f !== undefined) a.f = pick;
    else a.ints = [];
    return true;
  },
  /** A node with a huge attribute list: many attributes, or one list of 200,000 ints. */
  hugeAttrs(m, r) {
    const n = m.graph.node[r(m.graph.node.length)];
    if (r(2) === 0) for (let i = 0; i < 20000; i++) n.attribute.push({ name: `junk_${i}`, type: 2, i });
    else n.attribute.push({ name: ['axes', 'pads', 'perm', 'kernel_shape', 'junk'][r(5)], type: 7, ints: new Array(200_000).fill(1) });
    return true;
  },
  /** An initializer of another element type than its bytes hold, or an unknown one. */
  dataType(m, r) {
    const ts = m.graph.initializer;
    if (ts.length === 0) return false;
    ts[r(ts.length)].dataType = r(30);
    return true;
  },
  /** Another opset for the default domain (0, ancient, or from the future). */
  opset(m, r) {
    m.opsetImport = [{ domain: '', version: [0, 1, 3, 6, 99, 2 ** 31][r(6)] }];
    return true;
  },
  /** A node of an unknown op type or domain. */
  opType(m, r) {
    const n = m.graph.node[r(m.graph.node.length)];
    if (r(2) === 0) n.opType = 'NoSuchOp';
    else n.domain = 'com.example';
    return true;
  },
  /** Graph outputs that name nothing, or no graph at all. */
  outputs(m, r) {
    if (r(3) === 0) delete m.graph;
    else m.graph.output.push({ name: 'never_made', type: { tensorType: { elemType: 1 } } });
    return true;
  },
};

/** One mutation: [kind, seed numbers] — drawn by fast-check, applied by `mutate` (deterministic given the draw). */
export const mutationArb = fc.record({
  kind: fc.constantFrom('truncate', 'flip', ...Object.keys(STRUCTURAL)),
  caseIndex: fc.nat(FUZZ_CASES.length - 1),
  draws: fc.array(fc.nat(1 << 30), { minLength: 16, maxLength: 16 }),
  flips: fc.integer({ min: 1, max: 8 }),
});

/** The mutated model bytes for a drawn mutation of `bytes`. */
export function mutate(codec, bytes, { kind, draws, flips }) {
  let k = 0;
  const r = (n) => (n <= 0 ? 0 : draws[k++ % draws.length] % n);
  if (kind === 'truncate') return bytes.slice(0, r(bytes.length));
  if (kind === 'flip') {
    const out = bytes.slice();
    for (let i = 0; i < flips; i++) out[r(out.length)] ^= 1 << r(8);
    return out;
  }
  const m = codec.decode(bytes);
  if (!m.graph || !STRUCTURAL[kind](m, r)) return bytes;
  return codec.encode(m);
}

/**
 * Loads and runs one mutated model on `device`. Resolves to 'error' (a SinterError, as it must be) or 'ran';
 * any other exception is rethrown with the case named, since that is a bug.
 */
export async function fuzzOne(lib, fuzzCase, bytes, device, describe) {
  let model;
  try {
    model = await lib.loadOnnx(bytes, { device });
    const feeds = Object.fromEntries(model.inputs.map((info, i) => [info.name, fuzzCase.inputs[i] ?? fuzzCase.inputs[0]]));
    const out = await model.run(feeds);
    for (const t of Object.values(out)) {
      await t.data();
      t.dispose();
    }
    return 'ran';
  } catch (e) {
    if (e instanceof lib.SinterError) return 'error';
    const err = new Error(`fuzz case ${describe}: ${e?.constructor?.name ?? typeof e}: ${e?.message ?? e}`);
    err.cause = e;
    throw err;
  } finally {
    model?.dispose();
  }
}

async function main() {
  const args = process.argv.slice(2);
  let runs = 3000, seed = 20261206, device = 'cpu';
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--runs') runs = Number(args[++i]);
    else if (args[i] === '--seed') seed = Number(args[++i]);
    else if (args[i] === '--device') device = args[++i];
    else throw new Error(`unknown argument ${args[i]}; usage: node scripts/fuzz-onnx.mjs [--runs N] [--seed S] [--device cpu|webgpu]`);
  }
  const lib = await import('../dist/index.js');
  await lib.init({ device, quiet: true });
  const { ONNX_SCHEMA } = await import('../dist/io/onnx/schema.js');
  const codec = modelCodec(ONNX_SCHEMA);
  const cases = await Promise.all(FUZZ_CASES.map((n) => loadFuzzCase(lib, n)));
  const counts = { error: 0, ran: 0 };
  const started = Date.now();
  await fc.assert(fc.asyncProperty(mutationArb, async (mutation) => {
    const c = cases[mutation.caseIndex];
    const what = `${mutation.kind} of ${c.name}`;
    counts[await fuzzOne(lib, c, mutate(codec, c.bytes, mutation), device, what)]++;
  }), { seed, numRuns: runs });
  console.log(`${runs} mutated models on ${device} in ${((Date.now() - started) / 1000).toFixed(1)} s: ${counts.error} clear errors, ${counts.ran} ran`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
