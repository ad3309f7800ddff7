// A small, typed WebAssembly binary emitter: enough of the format to write SIMD kernels from
// TypeScript at run time (no toolchain, no prebuilt .wasm). A module imports one memory
// ("env", "memory") and defines functions; each function body is written with `Code`, whose
// methods are the instructions kernels use. The binary format: https://webassembly.github.io/spec/core/binary/

export type ValType = 'i32' | 'f32' | 'f64' | 'v128';
const VALTYPE: Record<ValType, number> = { i32: 0x7f, f32: 0x7d, f64: 0x7c, v128: 0x7b };

/** Instructions without immediates, by their text-format names. */
const PLAIN = {
  drop: 0x1a, select: 0x1b, return: 0x0f,
  'i32.eqz': 0x45, 'i32.eq': 0x46, 'i32.ne': 0x47, 'i32.lt_s': 0x48, 'i32.lt_u': 0x49, 'i32.gt_s': 0x4a, 'i32.gt_u': 0x4b,
  'i32.le_s': 0x4c, 'i32.ge_s': 0x4e, 'i32.add': 0x6a, 'i32.sub': 0x6b, 'i32.mul': 0x6c, 'i32.div_s': 0x6d, 'i32.rem_s': 0x6f,
  'i32.and': 0x71, 'i32.or': 0x72, 'i32.shl': 0x74, 'i32.shr_s': 0x75,
  'f32.eq': 0x5b, 'f32.ne': 0x5c, 'f32.lt': 0x5d, 'f32.gt': 0x5e, 'f32.le': 0x5f, 'f32.ge': 0x60,
  'f32.abs': 0x8b, 'f32.neg': 0x8c, 'f32.ceil': 0x8d, 'f32.floor': 0x8e, 'f32.trunc': 0x8f, 'f32.nearest': 0x90, 'f32.sqrt': 0x91,
  'f32.add': 0x92, 'f32.sub': 0x93, 'f32.mul': 0x94, 'f32.div': 0x95, 'f32.min': 0x96, 'f32.max': 0x97, 'f32.copysign': 0x98,
  'f64.sqrt': 0x9f, 'f64.add': 0xa0, 'f64.sub': 0xa1, 'f64.mul': 0xa2, 'f64.div': 0xa3,
  'i32.trunc_f32_s': 0xa8, 'f32.convert_i32_s': 0xb2, 'f32.demote_f64': 0xb6, 'f64.convert_i32_s': 0xb7, 'f64.promote_f32': 0xbb,
  'f32.reinterpret_i32': 0xbe,
} as const;

/** SIMD128 instructions without immediates (prefix 0xfd, then this opcode as a LEB128 u32). */
const SIMD = {
  'i32x4.splat': 0x11, 'f32x4.splat': 0x13, 'f64x2.splat': 0x14,
  'f64x2.promote_low_f32x4': 0x5f, 'f64x2.add': 0xf0, 'f64x2.sub': 0xf1, 'f64x2.mul': 0xf2,
  'f32x4.eq': 0x41, 'f32x4.ne': 0x42, 'f32x4.lt': 0x43, 'f32x4.gt': 0x44, 'f32x4.le': 0x45, 'f32x4.ge': 0x46,
  'v128.not': 0x4d, 'v128.and': 0x4e, 'v128.andnot': 0x4f, 'v128.or': 0x50, 'v128.xor': 0x51, 'v128.bitselect': 0x52,
  'f32x4.ceil': 0x67, 'f32x4.floor': 0x68, 'f32x4.trunc': 0x69, 'f32x4.nearest': 0x6a,
  'i32x4.lt_s': 0x39,
  'i16x8.narrow_i32x4_u': 0x86, 'i32x4.extend_low_i16x8_u': 0xa9, 'i32x4.extend_high_i16x8_u': 0xaa,
  'i32x4.shl': 0xab, 'i32x4.shr_s': 0xac, 'i32x4.add': 0xae, 'i32x4.sub': 0xb1, 'i32x4.mul': 0xb5,
  'f32x4.abs': 0xe0, 'f32x4.neg': 0xe1, 'f32x4.sqrt': 0xe3, 'f32x4.add': 0xe4, 'f32x4.sub': 0xe5, 'f32x4.mul': 0xe6,
  'f32x4.div': 0xe7, 'f32x4.min': 0xe8, 'f32x4.max': 0xe9, 'f32x4.pmin': 0xea, 'f32x4.pmax': 0xeb,
  'i32x4.trunc_sat_f32x4_s': 0xf8, 'f32x4.convert_i32x4_s': 0xfa,
  // Relaxed SIMD (only where hasRelaxedSimd() says the engine validates it): a·b + c, fused or not as the hardware does it.
  'f32x4.relaxed_madd': 0x105,
} as const;

/** SIMD128 lane instructions (their immediate is the lane index). */
const LANE = { 'i32x4.replace_lane': 0x1c, 'f32x4.extract_lane': 0x1f, 'f32x4.replace_lane': 0x20, 'f64x2.extract_lane': 0x21 } as const;

/** Loads and stores: opcode and natural alignment (log2 bytes). SIMD ones carry the 0xfd prefix. */
const MEMORY = {
  'i32.load': [[0x28], 2], 'f32.load': [[0x2a], 2], 'i32.store': [[0x36], 2], 'f32.store': [[0x38], 2],
  'v128.load': [[0xfd, 0x00], 4], 'v128.load32_splat': [[0xfd, 0x09], 2], 'v128.store': [[0xfd, 0x0b], 4],
  'v128.load32_zero': [[0xfd, 0x5c], 2], 'v128.load64_zero': [[0xfd, 0x5d], 3],
} as const satisfies Record<string, readonly [readonly number[], number]>;

export type PlainOp = keyof typeof PLAIN;
export type SimdOp = keyof typeof SIMD;
export type MemoryOp = keyof typeof MEMORY;

function uleb(out: number[], v: number): void {
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
}

function sleb(out: number[], v: number): void {
  v |= 0;
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && (b & 0x40) === 0) || (v === -1 && (b & 0x40) !== 0)) return void out.push(b);
    out.push(b | 0x80);
  }
}

const f32Bytes = new Uint8Array(4), f32View = new DataView(f32Bytes.buffer);
const f64Bytes = new Uint8Array(8), f64View = new DataView(f64Bytes.buffer);

/** A function body under construction: its locals (after the params) and its instructions. */
export class Code {
  readonly bytes: number[] = [];
  private readonly localTypes: ValType[] = [];
  /** A float32 constant's bits → the v128 local holding it in every lane (see `splatF32`). */
  readonly splats = new Map<number, number>();
  /** Open blocks, innermost last: branch depths are computed from labels, not counted by hand. */
  private readonly labels: symbol[] = [];

  constructor(readonly params: readonly ValType[]) {}

  /** A new local of `type`; returns its index. */
  local(type: ValType): number {
    this.localTypes.push(type);
    return this.params.length + this.localTypes.length - 1;
  }

  /** Locals grouped as the binary format declares them: runs of one type. */
  localGroups(): [number, ValType][] {
    const groups: [number, ValType][] = [];
    for (const t of this.localTypes) {
      const last = groups[groups.length - 1];
      if (last && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    return groups;
  }

  op(...names: PlainOp[]): this {
    for (const n of names) this.bytes.push(PLAIN[n]);
    return this;
  }
  simd(...names: SimdOp[]): this {
    for (const n of names) {
      this.bytes.push(0xfd);
      uleb(this.bytes, SIMD[n]);
    }
    return this;
  }
  /** A load or store at address (on the stack) + `offset` bytes. */
  mem(name: MemoryOp, offset = 0): this {
    const [code, align] = MEMORY[name];
    this.bytes.push(...code, align);
    uleb(this.bytes, offset);
    return this;
  }
  get(i: number): this {
    this.bytes.push(0x20);
    uleb(this.bytes, i);
    return this;
  }
  set(i: number): this {
    this.bytes.push(0x21);
    uleb(this.bytes, i);
    return this;
  }
  tee(i: number): this {
    this.bytes.push(0x22);
    uleb(this.bytes, i);
    return this;
  }
  i32(v: number): this {
    this.bytes.push(0x41);
    sleb(this.bytes, v);
    return this;
  }
  f64(v: number): this {
    f64View.setFloat64(0, v, true);
    this.bytes.push(0x44, ...f64Bytes);
    return this;
  }
  f32(v: number): this {
    f32View.setFloat32(0, v, true);
    this.bytes.push(0x43, ...f32Bytes);
    return this;
  }
  /**
   * Pushes `v` in all four f32 lanes, from a local read once at the function's entry from a mutable global
   * (ModuleBuilder.build adds both). V8 rebuilds an `f32.const; f32x4.splat` at every use, even one moved to a
   * local before a loop (it sees the constant through the local): a scalar move and a broadcast per constant
   * per iteration, which in an e^x polynomial's loop cost more than its arithmetic. A global's value is opaque
   * to the compiler: the local stays in a register, or a spill slot that the arithmetic reads as its operand.
   */
  splatF32(v: number): this {
    f32View.setFloat32(0, v, true);
    const bits = f32View.getInt32(0, true);
    let local = this.splats.get(bits);
    if (local === undefined) this.splats.set(bits, (local = this.local('v128')));
    return this.get(local);
  }
  /** A lane instruction with its lane immediate. */
  lane(name: keyof typeof LANE, lane: number): this {
    this.bytes.push(0xfd, LANE[name], lane);
    return this;
  }
  call(fn: number): this {
    this.bytes.push(0x10);
    uleb(this.bytes, fn);
    return this;
  }

  /** `block … end`: `br(label)` inside jumps past the end. */
  block(body: (label: symbol) => void): this {
    return this.structured(0x02, body);
  }
  /** `loop … end`: `br(label)` inside jumps back to the start. */
  loop(body: (label: symbol) => void): this {
    return this.structured(0x03, body);
  }
  /** `if … end`, consuming an i32 condition. */
  if(body: () => void): this {
    return this.structured(0x04, body);
  }
  br(label: symbol): this {
    return this.branch(0x0c, label);
  }
  brIf(label: symbol): this {
    return this.branch(0x0d, label);
  }

  /**
   * for (i = from; i < to; i += step) body — `from`/`to` are emitted by callbacks (`to` twice: it must be a
   * pure expression), `i` is a local; the body may `br(next)` to continue. Emitted as a guarded do-while (the
   * test at the bottom): V8 compiles a loop whose exit test comes first with extra moves and spills around
   * the back edge (about a fifth of an e^x loop's time).
   */
  forRange(i: number, from: () => void, to: () => void, step: number, body: (next: symbol) => void): this {
    from();
    this.set(i);
    return this.block((done) => {
      this.get(i);
      to();
      this.op('i32.ge_s').brIf(done);
      this.loop((top) => {
        this.block((next) => body(next));
        this.get(i).i32(step).op('i32.add').tee(i);
        to();
        this.op('i32.lt_s').brIf(top);
      });
    });
  }

  private structured(opcode: number, body: (label: symbol) => void): this {
    const label = Symbol();
    this.bytes.push(opcode, 0x40);
    this.labels.push(label);
    body(label);
    this.labels.pop();
    this.bytes.push(0x0b);
    return this;
  }
  private branch(opcode: number, label: symbol): this {
    const depth = this.labels.length - 1 - this.labels.lastIndexOf(label);
    if (depth >= this.labels.length) throw new Error('wasm emitter: branch to a label that is not open');
    this.bytes.push(opcode);
    uleb(this.bytes, depth);
    return this;
  }
}

interface FunctionDef {
  readonly name: string;
  readonly params: readonly ValType[];
  readonly results: readonly ValType[];
  readonly code: Code;
}

/** A module importing one memory and exporting its functions by name. */
export class ModuleBuilder {
  private readonly functions: FunctionDef[] = [];

  constructor(private readonly memory: { readonly initialPages: number; readonly shared?: boolean; readonly maximumPages?: number } = { initialPages: 1 }) {}

  /** Adds exported function `name`; `body` writes its code. Returns its index (for `call`). */
  func(name: string, params: readonly ValType[], results: readonly ValType[], body: (c: Code) => void): number {
    const code = new Code(params);
    body(code);
    this.functions.push({ name, params, results, code });
    return this.functions.length - 1;
  }

  build(): Uint8Array<ArrayBuffer> {
    const out = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    const section = (id: number, items: number[][]): void => {
      const body: number[] = [];
      uleb(body, items.length);
      for (const it of items) body.push(...it);
      out.push(id);
      uleb(out, body.length);
      out.push(...body);
    };
    const name = (s: string): number[] => {
      const b = [...new TextEncoder().encode(s)];
      const o: number[] = [];
      uleb(o, b.length);
      return [...o, ...b];
    };
    const vec = (xs: readonly number[]): number[] => {
      const o: number[] = [];
      uleb(o, xs.length);
      return [...o, ...xs];
    };
    // One type per function (duplicates are allowed by the format and keep this simple).
    section(1, this.functions.map((f) => [0x60, ...vec(f.params.map((t) => VALTYPE[t])), ...vec(f.results.map((t) => VALTYPE[t]))]));
    const m = this.memory;
    const limits: number[] = [];
    if (m.shared || m.maximumPages !== undefined) {
      limits.push(m.shared ? 0x03 : 0x01);
      uleb(limits, m.initialPages);
      uleb(limits, m.maximumPages ?? 65536);
    } else {
      limits.push(0x00);
      uleb(limits, m.initialPages);
    }
    section(2, [[...name('env'), ...name('memory'), 0x02, ...limits]]);
    section(3, this.functions.map((_, i) => { const o: number[] = []; uleb(o, i); return o; }));
    // The splatF32 constants: one mutable v128 global each (initialised to the value in every lane), per function.
    const globals: number[][] = [], preludes = this.functions.map((f) => {
      const prelude: number[] = [];
      for (const [bits, local] of f.code.splats) {
        const lanes: number[] = [];
        for (let k = 0; k < 4; k++) lanes.push(bits & 0xff, (bits >>> 8) & 0xff, (bits >>> 16) & 0xff, (bits >>> 24) & 0xff);
        globals.push([VALTYPE.v128, 0x01, 0xfd, 0x0c, ...lanes, 0x0b]);
        prelude.push(0x23);
        uleb(prelude, globals.length - 1);
        prelude.push(0x21);
        uleb(prelude, local);
      }
      return prelude;
    });
    if (globals.length) section(6, globals);
    section(7, this.functions.map((f, i) => { const o = [...name(f.name), 0x00]; uleb(o, i); return o; }));
    section(10, this.functions.map((f, i) => {
      const body: number[] = [];
      const groups = f.code.localGroups();
      uleb(body, groups.length);
      for (const [n, t] of groups) {
        uleb(body, n);
        body.push(VALTYPE[t]);
      }
      body.push(...preludes[i]!, ...f.code.bytes, 0x0b);
      const sized: number[] = [];
      uleb(sized, body.length);
      return [...sized, ...body];
    }));
    return new Uint8Array(out);
  }
}

let relaxedSupport: boolean | undefined;

/** Whether this engine validates relaxed SIMD's f32x4.relaxed_madd (checked once by validating a tiny module, not assumed; Node 20 needs --experimental-wasm-relaxed-simd, browsers ship it). */
export function hasRelaxedSimd(): boolean {
  if (relaxedSupport === undefined) {
    const m = new ModuleBuilder();
    m.func('probe', ['f32'], ['f32'], (c) => {
      c.get(0).simd('f32x4.splat').get(0).simd('f32x4.splat').get(0).simd('f32x4.splat').simd('f32x4.relaxed_madd').lane('f32x4.extract_lane', 0);
    });
    relaxedSupport = typeof WebAssembly === 'object' && WebAssembly.validate(m.build());
  }
  return relaxedSupport;
}

let simdSupport: boolean | undefined;

/** Whether this engine validates SIMD128 (checked once by validating a tiny SIMD module, not assumed). */
export function hasSimd(): boolean {
  if (simdSupport === undefined) {
    const m = new ModuleBuilder();
    m.func('probe', ['f32'], ['f32'], (c) => c.get(0).simd('f32x4.splat').simd('f32x4.abs').lane('f32x4.extract_lane', 0));
    simdSupport = typeof WebAssembly === 'object' && WebAssembly.validate(m.build());
  }
  return simdSupport;
}
