// sn.profiler, shaped like torch.profiler: record what a region of code ran (eager ops, jitted functions and ONNX
// models, user scopes), then read it as a table of key averages or as a Chrome trace (Perfetto, chrome://tracing).
//
// Times: an op's CPU time is the host time of its call (on WebGPU that is encoding and submitting; the GPU runs
// later). GPU times come only from timestamp queries: a jitted function or ONNX model profiled with
// `await f.profile(x)` / `await model.profile(feeds)` inside the region gives each kernel's GPU time on a device with
// 'timestamp-query'. Everything else shows "n/a" in the GPU columns: no GPU time is estimated.
import { SinterError } from '../errors.js';
import { itemSize } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import { type ProfiledKernel, profilerHooks } from './hooks.js';

export type Activity = 'cpu' | 'gpu';

/** torch.profiler.schedule: skip `wait` steps, record and discard `warmup` steps, keep `active` steps; `repeat` cycles (0 = forever). */
export interface Schedule {
  readonly wait?: number;
  readonly warmup?: number;
  readonly active: number;
  readonly repeat?: number;
  readonly skipFirst?: number;
}

export interface ProfileOptions {
  /** What to record (default both): 'cpu' host-side events, 'gpu' kernel times from timestamp queries. */
  readonly activities?: readonly Activity[];
  /** Keep each op's input shapes (for `keyAverages({ groupByInputShape: true })` and the trace). */
  readonly recordShapes?: boolean;
  /** Count the bytes each op's outputs allocate. */
  readonly profileMemory?: boolean;
  /** Record only some steps of a loop that calls `step()` once per iteration. */
  readonly schedule?: Schedule;
}

/** What one recorded event was. */
export type EventKind = 'op' | 'user' | 'jit' | 'kernel';

/** One recorded interval. Times in ms since the profile began. */
export interface ProfilerEvent {
  readonly name: string;
  readonly kind: EventKind;
  readonly device: string;
  readonly start: number;
  /** Host time (ms); null for a GPU-only kernel event. */
  readonly cpuMs: number | null;
  /** GPU time (ms) from timestamp queries; null where there is none. */
  readonly gpuMs: number | null;
  readonly inputShapes: readonly (readonly number[])[] | null;
  /** Bytes this event's own outputs allocated (profileMemory), else 0. */
  readonly bytes: number;
  /** Nesting depth on the host (0 = top level). */
  readonly depth: number;
  /** The step (of the schedule) it was recorded in. */
  readonly step: number;
  /** Host time of its direct children, for self time. */
  childCpuMs: number;
  /** Bytes allocated by events nested in it. */
  childBytes: number;
  /** GPU time of the kernels nested in it. */
  childGpuMs: number | null;
}

/** A row of `keyAverages()`: every event of one name (and input shapes), summed. PyTorch's FunctionEventAvg. */
export interface EventAverage {
  readonly key: string;
  readonly inputShapes: string;
  count: number;
  /** null when no event of this key has a host time (GPU-only kernels). */
  cpuTimeTotal: number | null;
  selfCpuTimeTotal: number | null;
  /** null when no event of this key has a GPU time. */
  gpuTimeTotal: number | null;
  selfGpuTimeTotal: number | null;
  cpuMemoryUsage: number;
  selfCpuMemoryUsage: number;
  gpuMemoryUsage: number;
  selfGpuMemoryUsage: number;
  readonly cpuTime: number | null;
  readonly gpuTime: number | null;
}

export type SortKey = 'cpuTimeTotal' | 'selfCpuTimeTotal' | 'gpuTimeTotal' | 'selfGpuTimeTotal' | 'count' | 'cpuMemoryUsage' | 'selfCpuMemoryUsage' | 'gpuMemoryUsage' | 'selfGpuMemoryUsage';
const SORT_KEYS: readonly SortKey[] = ['cpuTimeTotal', 'selfCpuTimeTotal', 'gpuTimeTotal', 'selfGpuTimeTotal', 'count', 'cpuMemoryUsage', 'selfCpuMemoryUsage', 'gpuMemoryUsage', 'selfGpuMemoryUsage'];

export interface TableOptions {
  /** Column to sort by, largest first (default 'cpuTimeTotal'); 'n/a' GPU times sort last. */
  readonly sortBy?: SortKey;
  /** At most this many rows (default all). */
  readonly rowLimit?: number;
}

function fmtMs(ms: number | null): string {
  if (ms === null) return 'n/a';
  if (ms >= 1000) return `${(ms / 1000).toFixed(3)}s`;
  if (ms >= 1) return `${ms.toFixed(3)}ms`;
  return `${(ms * 1000).toFixed(3)}us`;
}
function fmtBytes(b: number): string {
  const a = Math.abs(b);
  if (a >= 2 ** 30) return `${(b / 2 ** 30).toFixed(2)} Gb`;
  if (a >= 2 ** 20) return `${(b / 2 ** 20).toFixed(2)} Mb`;
  if (a >= 2 ** 10) return `${(b / 2 ** 10).toFixed(2)} Kb`;
  return `${b} b`;
}
const pct = (part: number | null, whole: number) => (part === null ? 'n/a' : whole > 0 ? `${((100 * part) / whole).toFixed(2)}%` : '0.00%');

/** The rows of `keyAverages()`; `table()` prints them as PyTorch does. */
export class EventAverages extends Array<EventAverage> {
  static override get [Symbol.species]() {
    return Array;
  }

  /** PyTorch's key_averages().table(): name, self/total CPU time and %, CPU avg, self/total GPU time, GPU avg, memory, calls, input shapes. */
  table(options: TableOptions = {}): string {
    const { sortBy = 'cpuTimeTotal', rowLimit = Infinity } = options;
    if (!SORT_KEYS.includes(sortBy)) throw new SinterError('profiler.table', `unknown sortBy ${JSON.stringify(sortBy)}; expected one of ${SORT_KEYS.join(', ')}`);
    if (!(rowLimit >= 0)) throw new SinterError('profiler.table', `rowLimit must be ≥ 0, got ${rowLimit}`);
    const rows = [...this].sort((a, b) => (b[sortBy] ?? -Infinity) - (a[sortBy] ?? -Infinity)).slice(0, rowLimit);
    const selfCpu = this.reduce((s, r) => s + (r.selfCpuTimeTotal ?? 0), 0);
    const gpuRows = this.filter((r) => r.selfGpuTimeTotal !== null);
    const selfGpu = gpuRows.length > 0 ? gpuRows.reduce((s, r) => s + r.selfGpuTimeTotal!, 0) : null;
    const withShapes = this.some((r) => r.inputShapes !== '');
    const withMemory = this.some((r) => r.cpuMemoryUsage !== 0 || r.gpuMemoryUsage !== 0);
    const header = ['Name', 'Self CPU %', 'Self CPU', 'CPU total %', 'CPU total', 'CPU time avg', 'Self GPU', 'Self GPU %', 'GPU total', 'GPU time avg',
      ...(withMemory ? ['CPU Mem', 'Self CPU Mem', 'GPU Mem', 'Self GPU Mem'] : []), '# of Calls', ...(withShapes ? ['Input Shapes'] : [])];
    const body = rows.map((r) => [
      r.key, pct(r.selfCpuTimeTotal, selfCpu), fmtMs(r.selfCpuTimeTotal), pct(r.cpuTimeTotal, selfCpu), fmtMs(r.cpuTimeTotal), fmtMs(r.cpuTime),
      fmtMs(r.selfGpuTimeTotal), selfGpu === null ? 'n/a' : pct(r.selfGpuTimeTotal, selfGpu), fmtMs(r.gpuTimeTotal), fmtMs(r.gpuTime),
      ...(withMemory ? [fmtBytes(r.cpuMemoryUsage), fmtBytes(r.selfCpuMemoryUsage), fmtBytes(r.gpuMemoryUsage), fmtBytes(r.selfGpuMemoryUsage)] : []),
      String(r.count), ...(withShapes ? [r.inputShapes] : []),
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
    const line = widths.map((w) => '-'.repeat(w)).join('  ');
    const fmt = (row: string[]) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
    return [line, fmt(header), line, ...body.map(fmt), line,
      `Self CPU time total: ${fmtMs(selfCpu)}`, `Self GPU time total: ${fmtMs(selfGpu)}${selfGpu === null ? ' (no timestamp queries were recorded: profile a jitted function or ONNX model with f.profile() on a device with timestamp-query)' : ''}`, ''].join('\n');
  }
}

const shapeKey = (shapes: ProfilerEvent['inputShapes']) => (shapes ? `[${shapes.map((s) => `[${s.join(', ')}]`).join(', ')}]` : '');

/** The result of `profile()`: the events, their averages and the Chrome trace. */
export class Profile {
  constructor(
    /** Every event kept (those of the schedule's active steps), in the order they began. */
    readonly events: readonly ProfilerEvent[],
    readonly options: { readonly activities: readonly Activity[]; readonly recordShapes: boolean; readonly profileMemory: boolean },
    /** performance.timeOrigin + the profile's start, for the trace's absolute times. */
    private readonly originMs: number,
  ) {}

  /** Events grouped by name (and by input shapes with `groupByInputShape`), summed: PyTorch's key_averages(). */
  keyAverages(options: { groupByInputShape?: boolean } = {}): EventAverages {
    if (options.groupByInputShape && !this.options.recordShapes) {
      throw new SinterError('profiler.keyAverages', 'groupByInputShape needs the profile to be recorded with { recordShapes: true }');
    }
    const rows = new Map<string, EventAverage>();
    for (const e of this.events) {
      const shapes = options.groupByInputShape ? shapeKey(e.inputShapes) : '';
      const id = `${e.name}\u0000${shapes}`;
      let r = rows.get(id);
      if (!r) {
        r = {
          key: e.name, inputShapes: shapes, count: 0, cpuTimeTotal: null, selfCpuTimeTotal: null, gpuTimeTotal: null, selfGpuTimeTotal: null,
          cpuMemoryUsage: 0, selfCpuMemoryUsage: 0, gpuMemoryUsage: 0, selfGpuMemoryUsage: 0,
          get cpuTime() { return this.cpuTimeTotal === null ? null : this.cpuTimeTotal / this.count; },
          get gpuTime() { return this.gpuTimeTotal === null ? null : this.gpuTimeTotal / this.count; },
        };
        rows.set(id, r);
      }
      r.count++;
      if (e.cpuMs !== null) {
        r.cpuTimeTotal = (r.cpuTimeTotal ?? 0) + e.cpuMs;
        r.selfCpuTimeTotal = (r.selfCpuTimeTotal ?? 0) + Math.max(0, e.cpuMs - e.childCpuMs);
      }
      const gpuTotal = e.gpuMs ?? e.childGpuMs;
      if (gpuTotal !== null) r.gpuTimeTotal = (r.gpuTimeTotal ?? 0) + gpuTotal;
      if (e.gpuMs !== null) r.selfGpuTimeTotal = (r.selfGpuTimeTotal ?? 0) + e.gpuMs;
      const onGpu = e.device === 'webgpu';
      if (onGpu) {
        r.gpuMemoryUsage += e.bytes + e.childBytes;
        r.selfGpuMemoryUsage += e.bytes;
      } else {
        r.cpuMemoryUsage += e.bytes + e.childBytes;
        r.selfCpuMemoryUsage += e.bytes;
      }
    }
    return EventAverages.from(rows.values()) as EventAverages;
  }

  /**
   * The Chrome trace event format (JSON, opens in Perfetto and chrome://tracing): host events on the "CPU" track,
   * kernels with GPU times on the "GPU" track. Writes it to `path` when given (Node), and returns the JSON text.
   */
  async exportChromeTrace(path?: string): Promise<string> {
    const us = (ms: number) => Math.round((this.originMs + ms) * 1000);
    const traceEvents: object[] = [
      { ph: 'M', pid: 0, name: 'process_name', args: { name: 'CPU' } },
      { ph: 'M', pid: 0, tid: 0, name: 'thread_name', args: { name: 'host' } },
      { ph: 'M', pid: 1, name: 'process_name', args: { name: 'GPU' } },
      { ph: 'M', pid: 1, tid: 0, name: 'thread_name', args: { name: 'kernels (timestamp queries)' } },
    ];
    const cat: Record<EventKind, string> = { op: 'cpu_op', user: 'user_annotation', jit: 'jit', kernel: 'kernel' };
    for (const e of this.events) {
      const args: Record<string, unknown> = { device: e.device, step: e.step };
      if (e.inputShapes) args['Input Dims'] = e.inputShapes;
      if (this.options.profileMemory && e.bytes) args.bytes = e.bytes;
      if (e.cpuMs !== null) traceEvents.push({ ph: 'X', cat: cat[e.kind], name: e.name, pid: 0, tid: 0, ts: us(e.start), dur: Math.max(0, Math.round(e.cpuMs * 1000)), args });
      if (e.gpuMs !== null) {
        traceEvents.push({ ph: 'X', cat: 'kernel', name: e.name, pid: 1, tid: 0, ts: us(e.start), dur: Math.max(0, Math.round(e.gpuMs * 1000)),
          args: { ...args, note: 'duration from timestamp queries; kernels of one call are placed end to end from the call\'s start' } });
      }
    }
    const json = JSON.stringify({ displayTimeUnit: 'ms', traceEvents });
    if (path !== undefined) {
      const specifier = 'node:fs/promises';
      const fs = (await import(/* @vite-ignore */ specifier)) as typeof import('node:fs/promises');
      await fs.writeFile(path, json);
    }
    return json;
  }
}

/** The step handle a profiled function gets: call `step()` at the end of each iteration when using a schedule. */
export interface ProfilerStep {
  step(): void;
  /** The current step number (0-based). */
  readonly stepNum: number;
}

interface Frame {
  event: { childCpuMs: number; childBytes: number; childGpuMs: number | null } | null;
}

/** The recording in progress (one at a time, like torch.profiler). */
class Recorder implements ProfilerStep {
  readonly events: ProfilerEvent[] = [];
  private readonly origin = performance.now();
  private readonly stack: Frame[] = [{ event: null }];
  stepNum = 0;
  constructor(
    readonly options: Profile['options'],
    private readonly schedule: Schedule | undefined,
  ) {}

  /** 'record' and keep, 'warmup' (record, discard), or 'skip'. */
  phase(step = this.stepNum): 'skip' | 'warmup' | 'record' {
    const s = this.schedule;
    if (!s) return 'record';
    const { wait = 0, warmup = 0, active, repeat = 0, skipFirst = 0 } = s;
    if (step < skipFirst) return 'skip';
    const k = step - skipFirst, cycle = wait + warmup + active;
    if (repeat > 0 && k >= repeat * cycle) return 'skip';
    const pos = k % cycle;
    return pos < wait ? 'skip' : pos < wait + warmup ? 'warmup' : 'record';
  }

  step(): void {
    // Warm-up steps ran with the hooks on (so one-time costs fall there) and are dropped now.
    if (this.phase() === 'warmup') for (let i = this.events.length - 1; i >= 0 && this.events[i]!.step === this.stepNum; i--) this.events.pop();
    this.stepNum++;
  }

  get recording(): boolean {
    return this.phase() !== 'skip';
  }

  /** Opens a host scope; returns its closer, which records the event. */
  open(name: string, kind: EventKind, device: string, inputs: readonly Tensor[] | null): (outputs?: readonly Tensor[], kernels?: readonly ProfiledKernel[] | null) => void {
    const start = performance.now();
    return this.openAt(name, kind, device, inputs, start);
  }

  openAt(name: string, kind: EventKind, device: string, inputs: readonly Tensor[] | null, start: number): (outputs?: readonly Tensor[], kernels?: readonly ProfiledKernel[] | null) => void {
    if (!this.recording) return () => {};
    const depth = this.stack.length - 1;
    const frame: Frame = { event: { childCpuMs: 0, childBytes: 0, childGpuMs: null } };
    this.stack.push(frame);
    const step = this.stepNum;
    return (outputs = [], kernels = null) => {
      const end = performance.now();
      // Close any scope left open inside (an exception): this one's children end with it.
      while (this.stack.length > 1 && this.stack[this.stack.length - 1] !== frame) this.stack.pop();
      this.stack.pop();
      const bytes = this.options.profileMemory ? outputs.reduce((s, t) => s + t.numel() * itemSize(t.dtype), 0) : 0;
      const own = frame.event!;
      const keepCpu = this.options.activities.includes('cpu');
      const keepGpu = this.options.activities.includes('gpu');
      const event: ProfilerEvent = {
        name, kind, device, start: start - this.origin, cpuMs: keepCpu ? end - start : null, gpuMs: null,
        inputShapes: this.options.recordShapes && inputs ? inputs.map((t) => [...t.shape]) : null,
        bytes, depth, step, childCpuMs: keepCpu ? own.childCpuMs : 0, childBytes: own.childBytes, childGpuMs: own.childGpuMs,
      };
      this.events.push(event);
      // A profiled jit call's kernels: nested events, placed end to end from the call's start (their durations are measured).
      if (kernels) {
        let at = start - this.origin;
        for (const k of kernels) {
          const gpuMs = keepGpu && k.gpuMs !== undefined ? k.gpuMs : null;
          const cpuMs = keepCpu && k.cpuMs !== undefined ? k.cpuMs : null;
          if (gpuMs === null && cpuMs === null) continue;
          this.events.push({ name: k.name, kind: 'kernel', device, start: at, cpuMs, gpuMs, inputShapes: null, bytes: 0, depth: depth + 1, step, childCpuMs: 0, childBytes: 0, childGpuMs: null });
          at += cpuMs ?? gpuMs ?? 0;
          if (cpuMs !== null) event.childCpuMs += cpuMs;
          if (gpuMs !== null) event.childGpuMs = (event.childGpuMs ?? 0) + gpuMs;
        }
      }
      const parent = this.stack[this.stack.length - 1]!.event;
      if (parent) {
        parent.childCpuMs += event.cpuMs ?? 0;
        parent.childBytes += event.bytes + event.childBytes;
        const g = event.gpuMs ?? event.childGpuMs;
        if (g !== null) parent.childGpuMs = (parent.childGpuMs ?? 0) + g;
      }
    };
  }
}

let active: Recorder | null = null;

/** The name users called: every elementwise op runs as the one 'map' op, whose attributes name it (add, relu, …). */
function opName(name: string, attrs: unknown): string {
  const called = (attrs as { name?: unknown } | null)?.name;
  return name === 'map' && typeof called === 'string' ? called : name;
}

const ACTIVITIES: readonly Activity[] = ['cpu', 'gpu'];

/**
 * Runs `fn` (sync or async) while recording every eager op, jitted call, ONNX model run and `recordFunction` scope,
 * and resolves to the Profile. One profile records at a time. With a `schedule`, call `p.step()` once per iteration.
 */
export async function profile(fn: (p: ProfilerStep) => unknown, options: ProfileOptions = {}): Promise<Profile> {
  const { activities = ACTIVITIES, recordShapes = false, profileMemory = false, schedule } = options;
  for (const a of activities) if (!ACTIVITIES.includes(a)) throw new SinterError('profiler.profile', `unknown activity ${JSON.stringify(a)}; expected 'cpu' or 'gpu'`);
  if (schedule) {
    const { wait = 0, warmup = 0, active: act, repeat = 0, skipFirst = 0 } = schedule;
    for (const [k, v] of Object.entries({ wait, warmup, repeat, skipFirst })) {
      if (!(Number.isInteger(v) && v >= 0)) throw new SinterError('profiler.profile', `schedule.${k} must be an integer ≥ 0, got ${v}`);
    }
    if (!(Number.isInteger(act) && act >= 1)) throw new SinterError('profiler.profile', `schedule.active must be an integer ≥ 1, got ${act}`);
  }
  if (active) throw new SinterError('profiler.profile', 'another profile is recording; profiles do not nest');
  const rec = new Recorder({ activities, recordShapes, profileMemory }, schedule);
  const originMs = performance.timeOrigin + performance.now();
  active = rec;
  profilerHooks.op = (name, attrs, inputs, outputs, start) => rec.openAt(opName(name, attrs), 'op', outputs[0]?.device ?? inputs[0]?.device ?? 'cpu', inputs, start)(outputs);
  profilerHooks.jit = (name, device, start, kernels) => rec.openAt(name, 'jit', device, null, start)([], kernels);
  try {
    await fn(rec);
  } finally {
    active = null;
    profilerHooks.op = null;
    profilerHooks.jit = null;
  }
  if (schedule && rec.phase() === 'warmup') rec.step();
  const events = [...rec.events].sort((a, b) => a.start - b.start || a.depth - b.depth);
  return new Profile(events, rec.options, originMs);
}

/**
 * Runs `fn` as a named scope (torch.profiler.record_function): while a profile records, its time and what ran inside
 * it form one event, nested under the scope it runs in. Returns what `fn` returns (a Promise for an async fn, whose
 * scope ends when it settles). Costs nothing when no profile is recording.
 */
export function recordFunction<R>(name: string, fn: () => R): R {
  if (typeof name !== 'string' || name === '') throw new SinterError('profiler.recordFunction', `expected a non-empty name, got ${JSON.stringify(name)}`);
  const rec = active;
  if (!rec) return fn();
  const close = rec.open(name, 'user', 'cpu', null);
  let result: R;
  try {
    result = fn();
  } catch (e) {
    close();
    throw e;
  }
  if (result instanceof Promise) return result.finally(() => close()) as R;
  close();
  return result;
}

/** torch.profiler.schedule: the object `profile({ schedule })` takes. */
export function schedule(s: Schedule): Schedule {
  return { ...s };
}
