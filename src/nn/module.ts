import type { DeviceName } from '../backend/backend.js';
import { SinterError, fmtShape } from '../errors.js';
import type { DType } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';

type Entry = { tensor: Tensor | null; key: string };

/**
 * The base of every layer, as torch.nn.Module: parameters, buffers and child modules registered
 * under PyTorch's state-dict names (so PyTorch checkpoints load), `eval()`/`train()`, state dicts.
 * Registered tensors are also properties of the module under `key` (camelCase), e.g.
 * `registerBuffer('running_mean', t, 'runningMean')`.
 */
export abstract class Module {
  /** Training mode (as in PyTorch, modules start in it); `eval()` switches to inference. */
  training = true;
  private readonly params = new Map<string, Entry>();
  private readonly bufs = new Map<string, Entry>();
  private readonly mods = new Map<string, Module>();

  abstract forward(...inputs: Tensor[]): Tensor;

  protected registerParameter<T extends Tensor | null>(name: string, tensor: T, key = name): T {
    this.params.set(name, { tensor, key });
    Reflect.set(this, key, tensor);
    return tensor;
  }
  protected registerBuffer<T extends Tensor | null>(name: string, tensor: T, key = name): T {
    this.bufs.set(name, { tensor, key });
    Reflect.set(this, key, tensor);
    return tensor;
  }
  protected registerModule<M extends Module>(name: string, module: M): M {
    this.mods.set(name, module);
    return module;
  }

  /** Sets training mode here and in every child; returns this. */
  train(mode = true): this {
    this.training = mode;
    for (const m of this.mods.values()) m.train(mode);
    return this;
  }
  /** Inference mode (dropout off, batch norm from running statistics); returns this. */
  eval(): this {
    return this.train(false);
  }

  *namedChildren(): IterableIterator<[string, Module]> {
    yield* this.mods.entries();
  }
  /** This module and all below it, with dotted names ('' for this one). */
  *namedModules(prefix = ''): IterableIterator<[string, Module]> {
    yield [prefix, this];
    for (const [name, m] of this.mods) yield* m.namedModules(prefix ? `${prefix}.${name}` : name);
  }
  *namedParameters(): IterableIterator<[string, Tensor]> {
    for (const [prefix, m] of this.namedModules()) {
      for (const [name, e] of m.params) if (e.tensor) yield [prefix ? `${prefix}.${name}` : name, e.tensor];
    }
  }
  *namedBuffers(): IterableIterator<[string, Tensor]> {
    for (const [prefix, m] of this.namedModules()) {
      for (const [name, e] of m.bufs) if (e.tensor) yield [prefix ? `${prefix}.${name}` : name, e.tensor];
    }
  }
  parameters(): Tensor[] {
    return [...this.namedParameters()].map(([, t]) => t);
  }
  buffers(): Tensor[] {
    return [...this.namedBuffers()].map(([, t]) => t);
  }

  /** Parameters and buffers by dotted name (the tensors themselves, not copies). */
  stateDict(): Record<string, Tensor> {
    return Object.fromEntries([...this.namedParameters(), ...this.namedBuffers()]);
  }

  /**
   * Replaces parameters and buffers with the tensors of `state` (same shapes; converted to each
   * entry's dtype and device). With `strict` (default), missing and unexpected keys are an error
   * listing them all. The replaced tensors are disposed; the given ones are copied when a
   * conversion is needed, else adopted (do not dispose them afterwards).
   */
  loadStateDict(state: Record<string, Tensor>, opts: { strict?: boolean } = {}): { missingKeys: string[]; unexpectedKeys: string[] } {
    const strict = opts.strict ?? true;
    const slots = new Map<string, [Module, Map<string, Entry>, string]>();
    for (const [prefix, m] of this.namedModules()) {
      for (const table of [m.params, m.bufs]) {
        for (const [name, e] of table) if (e.tensor) slots.set(prefix ? `${prefix}.${name}` : name, [m, table, name]);
      }
    }
    const missingKeys = [...slots.keys()].filter((k) => !(k in state));
    const unexpectedKeys = Object.keys(state).filter((k) => !slots.has(k));
    if (strict && (missingKeys.length || unexpectedKeys.length)) {
      const parts = [missingKeys.length ? `missing keys: ${missingKeys.join(', ')}` : '', unexpectedKeys.length ? `unexpected keys: ${unexpectedKeys.join(', ')}` : ''];
      throw new SinterError('loadStateDict', `state dict does not match the module (${parts.filter(Boolean).join('; ')})`);
    }
    for (const [key, [m, table, name]] of slots) {
      const given = state[key];
      if (!given) continue;
      const entry = table.get(name)!;
      const old = entry.tensor!;
      if (!(given instanceof Tensor)) throw new SinterError('loadStateDict', `'${key}' must be a Tensor`);
      if (given.shape.length !== old.shape.length || given.shape.some((d, i) => d !== old.shape[i])) {
        throw new SinterError('loadStateDict', `size mismatch for '${key}': the checkpoint has shape ${fmtShape(given.shape)}, the module expects ${fmtShape(old.shape)}`);
      }
      const loaded = given.to({ dtype: old.dtype, device: old.device });
      entry.tensor = loaded;
      Reflect.set(m, entry.key, loaded);
      if (old !== loaded) old.dispose();
    }
    return { missingKeys, unexpectedKeys };
  }

  /** Converts every parameter and buffer (floating point ones only for a dtype); returns this. */
  to(target: DeviceName | DType): this {
    for (const [, m] of this.namedModules()) {
      for (const table of [m.params, m.bufs]) {
        for (const e of table.values()) {
          const t = e.tensor;
          if (!t) continue;
          const isDtype = target !== 'cpu' && target !== 'webgpu';
          if (isDtype && !t.isFloatingPoint()) continue;
          const moved = t.to(target);
          if (moved !== t) t.dispose();
          e.tensor = moved;
          Reflect.set(m, e.key, moved);
        }
      }
    }
    return this;
  }

  /** Frees every parameter and buffer. */
  dispose(): void {
    for (const t of [...this.parameters(), ...this.buffers()]) t.dispose();
  }
}
