import { SinterError, check, fmtShape } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';
import { tensor, zeros } from '../tensor/creation.js';
import { tidy } from '../tensor/scope.js';
import { add, lt, mul, sub, where } from './binary.js';
import { linear } from './linalg.js';
import { cat, stack } from './movement.js';
import { checkInputs } from './op.js';
import { clamp, relu, sigmoid, tanh } from './unary.js';
import { narrow, permute, squeeze, unsqueeze } from './views.js';

// Recurrent layers as functions (inference): one layer, one or two directions, unrolled over time
// from ordinary ops, so they run on every backend and trace under jit. The input projection of all
// steps is one matmul; each step adds one matmul of the hidden state. General enough for PyTorch's
// nn.LSTM/nn.GRU/nn.RNN (src/nn) and ONNX's LSTM/GRU/RNN: the gate order of the weight rows, a
// reverse or bidirectional pass, initial states, per-sequence lengths and clipping are options.

/** The weights of one direction: rows are the gates stacked in `gateOrder` (G gates of H rows each). */
export interface RnnWeights {
  /** [G·H, inputSize] */
  wIh: Tensor;
  /** [G·H, H] */
  wHh: Tensor;
  /** [G·H] */
  bIh?: Tensor | null;
  /** [G·H] */
  bHh?: Tensor | null;
}

export interface RnnOptions {
  /** x is [batch, seq, input] (and the output [batch, seq, D·H]) instead of [seq, batch, input]. */
  batchFirst?: boolean;
  /** With one set of weights, run from the last step to the first (ONNX's direction 'reverse'). */
  reverse?: boolean;
  /** Initial hidden state [D, batch, H] (D directions); zeros when omitted. */
  h0?: Tensor | null;
  /**
   * Valid length of each sequence ([batch] ints, or numbers). Steps at or past a sequence's length
   * leave its state unchanged and output zeros; a reverse pass starts at its last valid step.
   */
  sequenceLens?: Tensor | readonly number[] | null;
  /** Clips the gates' pre-activations to [−clip, clip] (ONNX's `clip`). */
  clip?: number | null;
}

export interface LstmOptions extends RnnOptions {
  /** Initial cell state [D, batch, H]; zeros when omitted. */
  c0?: Tensor | null;
  /**
   * Order of the gates in the weight rows, as four letters: i (input), f (forget), g (cell; 'c' is
   * accepted too) and o (output). PyTorch: 'ifgo' (default); ONNX: 'iofc'.
   */
  gateOrder?: string;
}

export interface GruOptions extends RnnOptions {
  /** Order of the gates in the weight rows: r (reset), z (update), n (new; 'h' is accepted too). PyTorch: 'rzn' (default); ONNX: 'zrh'. */
  gateOrder?: string;
  /**
   * Apply the reset gate after the hidden projection: n = tanh(Wx + b + r ⊙ (W_h h + b_h)), as
   * PyTorch always does (default true). ONNX's default (linear_before_reset = 0) is false:
   * n = tanh(Wx + b + W_h (r ⊙ h) + b_h).
   */
  linearBeforeReset?: boolean;
}

export interface ElmanOptions extends RnnOptions {
  /** 'tanh' (default) or 'relu'. */
  nonlinearity?: 'tanh' | 'relu';
}

/** The output of every step ([seq, batch, D·H], or batch first) and the last hidden state [D, batch, H]. */
export interface RnnResult {
  output: Tensor;
  h: Tensor;
}
export interface LstmResult extends RnnResult {
  /** The last cell state [D, batch, H]. */
  c: Tensor;
}

/** Row offsets of each named gate in the stacked weights, from a gate-order string. */
function gateRows(op: string, order: string, names: string, aliases: Record<string, string>): Record<string, number> {
  const letters = [...order].map((l) => aliases[l] ?? l);
  if (letters.length !== names.length || [...names].some((n) => !letters.includes(n))) {
    throw new SinterError(op, `gateOrder must name the gates ${[...names].join(', ')} once each, got ${JSON.stringify(order)}`);
  }
  return Object.fromEntries(letters.map((l, i) => [l, i]));
}

interface Setup {
  /** [seq, batch, input] */
  x: Tensor;
  seq: number;
  batch: number;
  hidden: number;
  dirs: { w: RnnWeights; reverse: boolean }[];
  /** [batch, 1] lengths on x's device, or null when every sequence is full length. */
  lens: Tensor | null;
}

function setup(op: string, x: Tensor, weights: readonly RnnWeights[], gates: number, opts: RnnOptions): Setup {
  checkInputs(op, [x]);
  check(x.ndim === 3, op, () => `expects a 3-D input [${opts.batchFirst ? 'batch, seq' : 'seq, batch'}, inputSize], got ${x.describe()}`);
  check(Array.isArray(weights) && (weights.length === 1 || weights.length === 2), op, 'weights must be an array of one (unidirectional) or two (bidirectional: forward, reverse) sets of weights');
  check(!(opts.reverse && weights.length === 2), op, 'reverse applies to one direction; two sets of weights already run both');
  const seqFirst = opts.batchFirst ? permute(x, [1, 0, 2]) : x;
  const [seq, batch, input] = seqFirst.shape as [number, number, number];
  const hidden = weights[0]!.wHh.shape[1] ?? 0;
  for (const [d, w] of weights.entries()) {
    checkInputs(op, [x, w.wIh, w.wHh, ...(w.bIh ? [w.bIh] : []), ...(w.bHh ? [w.bHh] : [])]);
    const want = (t: Tensor | null | undefined, shape: number[], name: string) =>
      check(!t || (t.ndim === shape.length && t.shape.every((n, i) => n === shape[i])), op, () => `${name} of direction ${d} must have shape ${fmtShape(shape)} (${gates} gates of hidden size ${hidden}, input size ${input}), got ${t!.describe()}`);
    want(w.wIh, [gates * hidden, input], 'wIh');
    want(w.wHh, [gates * hidden, hidden], 'wHh');
    want(w.bIh, [gates * hidden], 'bIh');
    want(w.bHh, [gates * hidden], 'bHh');
  }
  if (opts.clip !== undefined && opts.clip !== null) check(typeof opts.clip === 'number' && opts.clip > 0, op, () => `clip must be a positive number, got ${JSON.stringify(opts.clip)}`);
  let lens: Tensor | null = null;
  const given = opts.sequenceLens;
  if (given instanceof Tensor) {
    checkInputs(op, [x, given]);
    check(given.ndim === 1 && given.shape[0] === batch && !given.isFloatingPoint(), op, () => `sequenceLens must be an int tensor [batch] = [${batch}], got ${given.describe()}`);
    lens = unsqueeze(given, 1);
  } else if (given) {
    check(given.length === batch && given.every((n) => Number.isInteger(n) && n >= 0 && n <= seq), op, () => `sequenceLens must hold one length in [0, ${seq}] per sequence (${batch}), got ${JSON.stringify(given)}`);
    lens = tensor([...given], { dtype: 'int32', device: x.device, shape: [batch, 1] });
  }
  return { x: seqFirst, seq, batch, hidden, dirs: weights.map((w, d) => ({ w, reverse: d === 1 || !!opts.reverse })), lens };
}

/** The initial state of direction d: init[d], or zeros [batch, H]. */
function initial(op: string, init: Tensor | null | undefined, d: number, s: Setup, what: string): Tensor {
  if (!init) return zeros([s.batch, s.hidden], { dtype: s.x.dtype, device: s.x.device });
  checkInputs(op, [s.x, init]);
  check(init.ndim === 3 && init.shape[0] === s.dirs.length && init.shape[1] === s.batch && init.shape[2] === s.hidden, op, () => `${what} must be [${s.dirs.length}, ${s.batch}, ${s.hidden}] (directions, batch, hidden), got ${init.describe()}`);
  return squeeze(narrow(init, 0, d, 1), 0);
}

/**
 * Runs every direction over the sequence (inside the caller's tidy, which frees every step's tensors). `step(w, gx, states)` gives the next states (hidden
 * first) from this step's input projection gx [batch, G·H] and the previous states. Returns the
 * output [seq, batch, D·H] (batch first when asked) and each state's final value [D, batch, H].
 */
function run(s: Setup, opts: RnnOptions, init: Tensor[][], step: (w: RnnWeights, gx: Tensor, states: Tensor[]) => Tensor[]): { output: Tensor; finals: Tensor[] } {
  const outputs: Tensor[] = [];
  const finals: Tensor[][] = [];
  s.dirs.forEach(({ w, reverse }, d) => {
    const proj = linear(s.x, w.wIh, w.bIh ?? null); // all steps' input projections at once
    let states = init[d]!;
    const perStep: Tensor[] = new Array(s.seq);
    for (let k = 0; k < s.seq; k++) {
      const t = reverse ? s.seq - 1 - k : k;
      const next = step(w, squeeze(narrow(proj, 0, t, 1), 0), states);
      if (s.lens) {
        // At or past a sequence's length its state stays, and its output is zero.
        const valid = lt(t, s.lens);
        states = next.map((n, i) => where(valid, n, states[i]!));
        perStep[t] = where(valid, next[0]!, 0);
      } else {
        states = next;
        perStep[t] = next[0]!;
      }
    }
    outputs.push(s.seq ? stack(perStep, 0) : zeros([0, s.batch, s.hidden], { dtype: s.x.dtype, device: s.x.device }));
    finals.push(states);
  });
  let output = outputs.length === 1 ? outputs[0]! : cat(outputs, -1);
  if (opts.batchFirst) output = permute(output, [1, 0, 2]);
  return { output, finals: finals[0]!.map((_, i) => stack(finals.map((f) => f[i]!), 0)) };
}

/** Gate g ([batch, H]) of stacked pre-activations [batch, G·H]. */
function gate(pre: Tensor, row: number, hidden: number): Tensor {
  return narrow(pre, 1, row * hidden, hidden);
}

function clipped(t: Tensor, clip: number | null | undefined): Tensor {
  return clip ? clamp(t, -clip, clip) : t;
}

/**
 * LSTM over a sequence (inference), one layer: weights of one direction, or two (forward, reverse)
 * for a bidirectional layer. Gates i, f, g, o: c' = σ(f)⊙c + σ(i)⊙tanh(g), h' = σ(o)⊙tanh(c').
 */
export function lstm(x: Tensor, weights: readonly RnnWeights[], opts: LstmOptions = {}): LstmResult {
  return tidy(() => lstmLayer(x, weights, opts));
}
function lstmLayer(x: Tensor, weights: readonly RnnWeights[], opts: LstmOptions): LstmResult {
  const rows = gateRows('lstm', opts.gateOrder ?? 'ifgo', 'ifgo', { c: 'g' });
  const s = setup('lstm', x, weights, 4, opts);
  const init = s.dirs.map((_, d) => [initial('lstm', opts.h0, d, s, 'h0'), initial('lstm', opts.c0, d, s, 'c0')]);
  const H = s.hidden;
  const { output, finals } = run(s, opts, init, (w, gx, [h, c]) => {
    const pre = add(gx, linear(h!, w.wHh, w.bHh ?? null));
    const g = (name: string) => clipped(gate(pre, rows[name]!, H), opts.clip);
    const c2 = add(mul(sigmoid(g('f')), c!), mul(sigmoid(g('i')), tanh(g('g'))));
    return [mul(sigmoid(g('o')), tanh(c2)), c2];
  });
  return { output, h: finals[0]!, c: finals[1]! };
}

/**
 * GRU over a sequence (inference), one layer (see `lstm` for directions). Gates r, z, n:
 * h' = (1 − σ(z))⊙n + σ(z)⊙h with n as `linearBeforeReset` says.
 */
export function gru(x: Tensor, weights: readonly RnnWeights[], opts: GruOptions = {}): RnnResult {
  return tidy(() => gruLayer(x, weights, opts));
}
function gruLayer(x: Tensor, weights: readonly RnnWeights[], opts: GruOptions): RnnResult {
  const rows = gateRows('gru', opts.gateOrder ?? 'rzn', 'rzn', { h: 'n' });
  const s = setup('gru', x, weights, 3, opts);
  const init = s.dirs.map((_, d) => [initial('gru', opts.h0, d, s, 'h0')]);
  const H = s.hidden, before = opts.linearBeforeReset ?? true;
  const { output, finals } = run(s, opts, init, (w, gx, [h]) => {
    const rowsOf = (t: Tensor | null | undefined, name: string) => (t ? narrow(t, 0, rows[name]! * H, H) : null);
    const gh = (name: string, v: Tensor) => linear(v, rowsOf(w.wHh, name)!, rowsOf(w.bHh, name));
    const r = sigmoid(clipped(add(gate(gx, rows.r!, H), gh('r', h!)), opts.clip));
    const z = sigmoid(clipped(add(gate(gx, rows.z!, H), gh('z', h!)), opts.clip));
    const hn = before ? mul(r, gh('n', h!)) : gh('n', mul(r, h!));
    const n = tanh(clipped(add(gate(gx, rows.n!, H), hn), opts.clip));
    return [add(mul(sub(1, z), n), mul(z, h!))];
  });
  return { output, h: finals[0]! };
}

/** Elman RNN over a sequence (inference), one layer: h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (or relu). */
export function rnn(x: Tensor, weights: readonly RnnWeights[], opts: ElmanOptions = {}): RnnResult {
  return tidy(() => elmanLayer(x, weights, opts));
}
function elmanLayer(x: Tensor, weights: readonly RnnWeights[], opts: ElmanOptions): RnnResult {
  const act = opts.nonlinearity ?? 'tanh';
  check(act === 'tanh' || act === 'relu', 'rnn', () => `nonlinearity must be 'tanh' or 'relu', got ${JSON.stringify(act)}`);
  const s = setup('rnn', x, weights, 1, opts);
  const init = s.dirs.map((_, d) => [initial('rnn', opts.h0, d, s, 'h0')]);
  const { output, finals } = run(s, opts, init, (w, gx, [h]) => {
    const pre = clipped(add(gx, linear(h!, w.wHh, w.bHh ?? null)), opts.clip);
    return [act === 'tanh' ? tanh(pre) : relu(pre)];
  });
  return { output, h: finals[0]! };
}
