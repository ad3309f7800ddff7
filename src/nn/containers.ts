import { SinterError } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import { Module } from './module.js';

// Containers of modules, as torch.nn's: children are registered under their index or key, so state
// dicts read '0.weight', 'blocks.1.fc.bias', 'heads.cls.weight' as in PyTorch.

/** A module that returns its input (a placeholder, as nn.Identity). */
export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

function checkModule(op: string, m: unknown, what: string): Module {
  if (!(m instanceof Module)) throw new SinterError(op, `${what} must be a Module, got ${m === null ? 'null' : typeof m === 'object' ? (m as object).constructor?.name ?? 'object' : typeof m}`);
  return m;
}

/** Modules by position (indices count from the end when negative); registered as '0', '1', …. */
export class ModuleList extends Module implements Iterable<Module> {
  /** `list[i]` reads a module as in PyTorch (children are fields named '0', '1', …). */
  readonly [index: number]: Module;
  constructor(modules: Iterable<Module> = []) {
    super();
    for (const m of modules) this.append(m);
  }
  get length(): number {
    return this.children().length;
  }
  /** The module at `index` (negative counts from the end). */
  at(index: number): Module {
    const n = this.length;
    if (!Number.isInteger(index) || index < -n || index >= n) throw new SinterError(this.constructor.name, `index ${index} is out of range for ${n} modules`);
    return this.children()[index < 0 ? index + n : index]!;
  }
  append(m: Module): this {
    this.registerModule(String(this.length), checkModule(this.constructor.name, m, 'an entry'));
    return this;
  }
  extend(modules: Iterable<Module>): this {
    for (const m of modules) this.append(m);
    return this;
  }
  [Symbol.iterator](): Iterator<Module> {
    return this.children()[Symbol.iterator]();
  }
  forward(..._inputs: never[]): unknown {
    throw new SinterError(this.constructor.name, 'a container has no forward of its own: iterate over it and call its modules');
  }
}

/** Runs modules in order, each on the previous one's output: `new Sequential(a, b)` or, with names, `new Sequential({ conv: a, act: b })`. */
export class Sequential extends ModuleList {
  constructor(...modules: Module[] | [Record<string, Module>]) {
    super();
    const first = modules[0];
    if (modules.length === 1 && first !== undefined && !(first instanceof Module) && typeof first === 'object') {
      for (const [name, m] of Object.entries(first)) this.registerModule(name, checkModule('Sequential', m, `'${name}'`));
    } else {
      for (const m of modules as Module[]) this.append(m);
    }
  }
  /** The modules in order (a fresh array). */
  get layers(): Module[] {
    return this.children();
  }
  override forward(x: Tensor): Tensor {
    let y = x;
    for (const m of this) {
      const next = (m.forward as (x: Tensor) => unknown)(y);
      if (y !== x && next !== y) y.dispose();
      y = next as Tensor;
    }
    return y;
  }
}

/** Modules by name (insertion order). Names must be identifiers that do not shadow the container's own members. */
export class ModuleDict extends Module {
  constructor(modules: Record<string, Module> = {}) {
    super();
    for (const [k, m] of Object.entries(modules)) this.set(k, m);
  }
  get size(): number {
    return this.children().length;
  }
  get(key: string): Module | undefined {
    return this.has(key) ? ((this as unknown as Record<string, Module>)[key]) : undefined;
  }
  has(key: string): boolean {
    return [...this.namedChildren()].some(([k]) => k === key);
  }
  set(key: string, m: Module): this {
    if (typeof key !== 'string' || key === '' || key.includes('.')) throw new SinterError('ModuleDict', `a key must be a non-empty string without '.', got ${JSON.stringify(key)}`);
    if (key in this && !this.has(key)) throw new SinterError('ModuleDict', `the key '${key}' would shadow a member of ModuleDict; choose another name`);
    this.registerModule(key, checkModule('ModuleDict', m, `'${key}'`));
    return this;
  }
  keys(): string[] {
    return [...this.namedChildren()].map(([k]) => k);
  }
  values(): Module[] {
    return this.children();
  }
  entries(): [string, Module][] {
    return [...this.namedChildren()];
  }
  forward(): never {
    throw new SinterError('ModuleDict', 'a container has no forward of its own: call its modules by name');
  }
}
