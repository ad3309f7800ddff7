import type { DeviceName } from '../backend/backend.js';
import { SinterError, fmtShape } from '../errors.js';
import { type DType, isDType } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { guardValue } from '../jit/trace.js';
import { toDevice } from '../ops/views.js';

const PARAMETERS = new WeakSet<Tensor>();

/**
 * Marks a tensor as a parameter, as torch.nn.Parameter does: assigned to a module's field it is
 * registered under the field's name. `new nn.Parameter(t)` returns `t` itself (no copy), so
 * `p instanceof nn.Parameter` holds and `p` is used like any tensor.
 */
export class Parameter {
  constructor(data: Tensor) {
    if (!(data instanceof Tensor)) throw new SinterError('Parameter', `expects a Tensor, got ${data === null ? 'null' : typeof data}`);
    PARAMETERS.add(data);
    return data as Parameter;
  }
  static [Symbol.hasInstance](x: unknown): boolean {
    return x instanceof Tensor && PARAMETERS.has(x);
  }
}
// A Parameter is the tensor it marks.
export interface Parameter extends Tensor {}

function markParameter<T extends Tensor | null>(t: T): T {
  if (t) PARAMETERS.add(t);
  return t;
}

/** Keys loadStateDict found missing in, and unexpected in, the state dict (as PyTorch's `_IncompatibleKeys`). */
export interface IncompatibleKeys {
  missingKeys: string[];
  unexpectedKeys: string[];
}

type Slot = { module: Module; field: string; kind: 'parameter' | 'buffer' };

/**
 * The base of every layer, as torch.nn.Module. Assigning a Module, an `nn.Parameter` or (after
 * `registerBuffer`) a buffer to a field registers it under the field's name, in assignment order:
 * `this.fc1 = new nn.Linear(4, 8)` is all a submodule needs. Registration is discovery: the
 * module's own enumerable fields are its children and parameters, so reassigning a field replaces
 * what is registered (a field declared in a class body exists from its declaration on, so there
 * the declaration order counts). `registerParameter/Buffer/Module(name, value, field)` give a state-dict name
 * other than the field's (PyTorch's `running_mean` for the field `runningMean`).
 */
export abstract class Module {
  #training = true;
  /**
   * Training mode (as in PyTorch, modules start in it); `eval()` switches to inference. Code that
   * reads it while `jit` traces is guarded on it: the jitted function retraces when it changes.
   */
  get training(): boolean {
    guardValue('training', () => this.#training);
    return this.#training;
  }
  set training(mode: boolean) {
    this.#training = mode;
  }
  /** Field → state-dict name, where they differ. */
  private readonly _names = new Map<string, string>();
  /** Fields registered as parameters (their value may be null: PyTorch's `bias=None`). */
  private readonly _parameterFields = new Set<string>();
  private readonly _bufferFields = new Set<string>();
  private readonly _nonPersistent = new Set<string>();

  /** The computation; subclasses declare their own inputs and outputs. */
  abstract forward(...inputs: never[]): unknown;

  private static readonly INTERNAL = new Set(['training', '_names', '_parameterFields', '_bufferFields', '_nonPersistent']);

  private alias(name: string, field: string): void {
    if (typeof name !== 'string' || name === '' || name.includes('.')) throw new SinterError(this.constructor.name, `a registered name must be a non-empty string without '.', got ${JSON.stringify(name)}`);
    if (name !== field) this._names.set(field, name);
  }

  /** Registers `tensor` (or null) as parameter `name` (stored in field `field`, default the same). */
  registerParameter<T extends Tensor | null>(name: string, tensor: T, field = name): T {
    if (tensor !== null && !(tensor instanceof Tensor)) throw new SinterError('registerParameter', `parameter '${name}' must be a Tensor or null`);
    this.alias(name, field);
    this._parameterFields.add(field);
    Reflect.set(this, field, markParameter(tensor));
    return tensor;
  }
  /**
   * Registers a buffer: state that is not a parameter (running statistics). Non-persistent buffers
   * stay out of stateDict. PyTorch's `register_buffer(name, t, persistent)` form works too.
   */
  registerBuffer<T extends Tensor | null>(name: string, tensor: T, persistent?: boolean): T;
  registerBuffer<T extends Tensor | null>(name: string, tensor: T, field?: string, opts?: { persistent?: boolean }): T;
  registerBuffer<T extends Tensor | null>(name: string, tensor: T, fieldOrPersistent: string | boolean = name, opts: { persistent?: boolean } = {}): T {
    if (tensor !== null && !(tensor instanceof Tensor)) throw new SinterError('registerBuffer', `buffer '${name}' must be a Tensor or null`);
    const field = typeof fieldOrPersistent === 'string' ? fieldOrPersistent : name;
    const persistent = typeof fieldOrPersistent === 'boolean' ? fieldOrPersistent : opts.persistent ?? true;
    this.alias(name, field);
    this._bufferFields.add(field);
    if (!persistent) this._nonPersistent.add(field);
    Reflect.set(this, field, tensor);
    return tensor;
  }
  /** Registers a child module as `name` (stored in field `field`, default the same). */
  registerModule<M extends Module | null>(name: string, module: M, field = name): M {
    if (module !== null && !(module instanceof Module)) throw new SinterError('registerModule', `'${name}' must be a Module or null`);
    this.alias(name, field);
    Reflect.set(this, field, module);
    return module;
  }

  /** The own fields in assignment order, with their state-dict names and what they hold. */
  private *fields(): IterableIterator<[name: string, field: string, value: unknown]> {
    for (const field of Object.keys(this)) {
      if (Module.INTERNAL.has(field)) continue;
      yield [this._names.get(field) ?? field, field, (this as Record<string, unknown>)[field]];
    }
  }
  private *ownParameters(): IterableIterator<[string, string, Tensor]> {
    for (const [name, field, v] of this.fields()) {
      if (v instanceof Tensor && (this._parameterFields.has(field) || PARAMETERS.has(v))) yield [name, field, markParameter(v)];
    }
  }
  private *ownBuffers(persistentOnly: boolean): IterableIterator<[string, string, Tensor]> {
    for (const [name, field, v] of this.fields()) {
      if (v instanceof Tensor && this._bufferFields.has(field) && !(persistentOnly && this._nonPersistent.has(field))) yield [name, field, v];
    }
  }

  /** The direct children by name, in registration order. */
  *namedChildren(): IterableIterator<[string, Module]> {
    for (const [name, , v] of this.fields()) if (v instanceof Module) yield [name, v];
  }
  children(): Module[] {
    return [...this.namedChildren()].map(([, m]) => m);
  }
  /** This module and all below it, with dotted names ('' for this one); each module once. */
  *namedModules(prefix = '', memo: Set<Module> = new Set()): IterableIterator<[string, Module]> {
    if (memo.has(this)) return;
    memo.add(this);
    yield [prefix, this];
    for (const [name, m] of this.namedChildren()) yield* m.namedModules(prefix ? `${prefix}.${name}` : name, memo);
  }
  modules(): Module[] {
    return [...this.namedModules()].map(([, m]) => m);
  }
  /** Every parameter with its dotted name (each tensor once), module by module as PyTorch orders them. */
  *namedParameters(prefix = ''): IterableIterator<[string, Tensor]> {
    const seen = new Set<Tensor>();
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [name, , t] of m.ownParameters()) {
        if (seen.has(t)) continue;
        seen.add(t);
        yield [path ? `${path}.${name}` : name, t];
      }
    }
  }
  *namedBuffers(prefix = ''): IterableIterator<[string, Tensor]> {
    for (const [path, m] of this.namedModules(prefix)) for (const [name, , t] of m.ownBuffers(false)) yield [path ? `${path}.${name}` : name, t];
  }
  parameters(): Tensor[] {
    return [...this.namedParameters()].map(([, t]) => t);
  }
  buffers(): Tensor[] {
    return [...this.namedBuffers()].map(([, t]) => t);
  }
  /** How many numbers the parameters hold (PyTorch: `sum(p.numel() for p in m.parameters())`). */
  numParameters(): number {
    return this.parameters().reduce((n, t) => n + t.numel(), 0);
  }

  /** Every (module, field) that holds state, by state-dict key: each module's parameters, then its persistent buffers, as PyTorch orders them. */
  private slots(): Map<string, Slot> {
    const slots = new Map<string, Slot>();
    for (const [path, m] of this.namedModules()) {
      const key = (name: string) => (path ? `${path}.${name}` : name);
      for (const [name, field] of m.ownParameters()) slots.set(key(name), { module: m, field, kind: 'parameter' });
      for (const [name, field] of m.ownBuffers(true)) slots.set(key(name), { module: m, field, kind: 'buffer' });
    }
    return slots;
  }

  /** Parameters and persistent buffers by dotted name (the tensors themselves, not copies), in PyTorch's order. */
  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [key, s] of this.slots()) out[key] = (s.module as unknown as Record<string, Tensor>)[s.field]!;
    return out;
  }

  /**
   * Replaces parameters and buffers with the tensors of `state` (same shapes; converted to each
   * entry's dtype and device). With `strict` (default), missing or unexpected keys are an error
   * listing them all, as PyTorch reports them; without it they are returned. Shapes must match
   * either way. The replaced tensors are disposed; the given ones are copied when a conversion is
   * needed, else adopted (do not dispose them afterwards).
   */
  loadStateDict(state: Record<string, Tensor>, opts: { strict?: boolean } = {}): IncompatibleKeys {
    const strict = opts.strict ?? true;
    const slots = this.slots();
    const missingKeys = [...slots.keys()].filter((k) => !(k in state));
    const unexpectedKeys = Object.keys(state).filter((k) => !slots.has(k));
    const errors: string[] = [];
    if (strict && unexpectedKeys.length) errors.push(`Unexpected key(s) in state_dict: ${unexpectedKeys.map((k) => `"${k}"`).join(', ')}.`);
    if (strict && missingKeys.length) errors.push(`Missing key(s) in state_dict: ${missingKeys.map((k) => `"${k}"`).join(', ')}.`);
    for (const [key, s] of slots) {
      const given = state[key];
      if (given === undefined) continue;
      const old = (s.module as unknown as Record<string, Tensor>)[s.field]!;
      if (!(given instanceof Tensor)) errors.push(`'${key}' must be a Tensor, got ${given === null ? 'null' : typeof given}.`);
      else if (given.shape.length !== old.shape.length || given.shape.some((d, i) => d !== old.shape[i])) {
        errors.push(`size mismatch for ${key}: copying a param with shape ${fmtShape(given.shape)} from checkpoint, the shape in current model is ${fmtShape(old.shape)}.`);
      }
    }
    if (errors.length) throw new SinterError('loadStateDict', `Error(s) in loading state_dict for ${this.constructor.name}:\n\t${errors.join('\n\t')}`);
    for (const [key, s] of slots) {
      const given = state[key];
      if (given === undefined) continue;
      const old = (s.module as unknown as Record<string, Tensor>)[s.field]!;
      const loaded = given.to({ dtype: old.dtype, device: old.device });
      if (s.kind === 'parameter') markParameter(loaded);
      Reflect.set(s.module, s.field, loaded);
      if (old !== loaded && old !== given) old.dispose();
    }
    return { missingKeys, unexpectedKeys };
  }

  /** Sets training mode here and in every module below; returns this. */
  train(mode = true): this {
    if (typeof mode !== 'boolean') throw new SinterError('train', `mode must be a boolean, got ${JSON.stringify(mode)}`);
    for (const m of this.modules()) m.training = mode;
    return this;
  }
  /** Inference mode (dropout off, batch norm from running statistics); returns this. */
  eval(): this {
    return this.train(false);
  }
  /** Calls `fn` on every module below, children first, then on this one (as PyTorch's apply); returns this. */
  apply(fn: (m: Module) => void): this {
    for (const c of this.children()) c.apply(fn);
    fn(this);
    return this;
  }

  /** Replaces each parameter and buffer by `convert(t)` (the old one is disposed when a new one is made). */
  private convertTensors(convert: (t: Tensor) => Tensor): void {
    for (const m of this.modules()) {
      for (const [, field, t] of [...m.ownParameters(), ...m.ownBuffers(false)]) {
        const moved = convert(t);
        if (moved === t) continue;
        if (PARAMETERS.has(t)) markParameter(moved);
        Reflect.set(m, field, moved);
        t.dispose();
      }
    }
  }

  /**
   * `to(dtype)` converts floating-point parameters and buffers (ints stay, as in PyTorch);
   * `to(device)` moves them, synchronously from the CPU only: leaving a GPU needs a readback, so
   * use `await module.toDevice(device)`. Returns this.
   */
  to(target: DeviceName | DType | { dtype?: DType; device?: DeviceName }): this {
    const o = typeof target === 'string' ? (isDType(target) ? { dtype: target } : { device: target as DeviceName }) : target;
    if (o.dtype !== undefined) {
      if (!isDType(o.dtype)) throw new SinterError('to', `unknown dtype ${JSON.stringify(o.dtype)}`);
      this.convertTensors((t) => (t.isFloatingPoint() ? t.to(o.dtype!) : t));
    }
    if (o.device !== undefined) {
      const from = [...this.parameters(), ...this.buffers()].find((t) => t.device !== 'cpu' && t.device !== o.device);
      if (from) throw new SinterError('to', `moving ${this.constructor.name} from ${from.device} to ${o.device} needs a GPU readback, which is asynchronous: use \`await module.toDevice('${o.device}')\``);
      this.convertTensors((t) => t.to(o.device!));
    }
    return this;
  }
  /** Moves every parameter and buffer to `device`, awaiting the readbacks when they leave a GPU; resolves to this. */
  async toDevice(device: DeviceName): Promise<this> {
    const moved = new Map<Tensor, Tensor>();
    for (const t of [...this.parameters(), ...this.buffers()]) if (!moved.has(t)) moved.set(t, await toDevice(t, device));
    this.convertTensors((t) => moved.get(t) ?? t);
    return this;
  }
  /** Floating-point parameters and buffers to float16; returns this. */
  half(): this {
    return this.to('float16');
  }
  /** Floating-point parameters and buffers to float32; returns this. */
  float(): this {
    return this.to('float32');
  }

  /** The settings shown in `toString()` between the parentheses, as PyTorch's extra_repr (e.g. `in_features=4, out_features=8, bias=True`). */
  extraRepr(): string {
    return '';
  }
  /** The module tree as PyTorch prints it. */
  toString(): string {
    const lines = this.extraRepr() ? this.extraRepr().split('\n') : [];
    for (const [name, m] of this.namedChildren()) lines.push(`(${name}): ${String(m).split('\n').join('\n  ')}`);
    const head = this.constructor.name;
    if (lines.length === 0) return `${head}()`;
    if (lines.length === 1 && this.children().length === 0) return `${head}(${lines[0]})`;
    return `${head}(\n  ${lines.join('\n  ')}\n)`;
  }

  /** Frees every parameter and buffer. */
  dispose(): void {
    for (const t of new Set([...this.parameters(), ...this.buffers()])) t.dispose();
  }
}
