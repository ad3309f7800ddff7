// What the bench scripts share: timing with sn.benchmark.Timer (warm-up, then adaptiveAutorange: the device
// synchronised inside the timed region, measurements until the IQR is small or the budget is spent), the figures'
// format (median and IQR), a progress bar over the figures, and the line that says when and on what machine they
// were taken.
import os from 'node:os';
import cliProgress from 'cli-progress';
import * as sn from '../dist/index.js';

/** Untimed runs before the Timer's own block-size probing (first calls compile pipelines and fill caches). */
export const WARMUP = 2;
/** PyTorch's adaptive_autorange default: stop once the IQR is under 10% of the median. */
export const DEFAULT_THRESHOLD = 0.1;

/**
 * Reads `--budget SECONDS` (the most timed seconds per figure) and `--threshold FRACTION` from parseArgs values.
 * `--runs N` (the scripts' option before the Timer; scripts/gpu-check.sh still passes it) is accepted with a warning:
 * the Timer picks the runs per measurement and how many measurements to take.
 */
export function timingOptions(values, defaultBudget) {
  if (values.runs !== undefined) {
    console.error(`warning: --runs ${values.runs} has no effect: sn.benchmark.Timer picks the runs per measurement and measures until ` +
      'the IQR is under --threshold of the median (default 0.1) or --budget seconds are spent');
  }
  const budget = Number(values.budget ?? defaultBudget), threshold = Number(values.threshold ?? DEFAULT_THRESHOLD);
  if (!(budget > 0)) throw new Error(`--budget must be a positive number of seconds, got ${values.budget}`);
  if (!(threshold > 0)) throw new Error(`--threshold must be a positive fraction, got ${values.threshold}`);
  return { budget, threshold };
}

/** parseArgs option specs of timingOptions, to spread into a script's own. */
export const TIMING_ARGS = { budget: { type: 'string' }, threshold: { type: 'string' }, runs: { type: 'string' } };

let progress = null;

/**
 * A progress bar on stderr over the `total` figures a script will time, advanced by measure(); none when stderr is not
 * a terminal (logs stay plain lines).
 */
export function startProgress(total) {
  if (!process.stderr.isTTY) return;
  const multi = new cliProgress.MultiBar({ format: 'timing |{bar}| {value}/{total} {name}', stream: process.stderr, clearOnComplete: true, hideCursor: true },
    cliProgress.Presets.shades_classic);
  progress = { multi, bar: multi.create(total, 0, { name: '' }) };
}

export function stopProgress() {
  // A last redraw writes the lines log() buffered since the previous one (stop() alone drops them).
  progress?.multi.update();
  progress?.multi.stop();
  progress = null;
}

/** A line on stderr, above the progress bar while there is one. */
export function log(line) {
  if (progress) progress.multi.log(`${line}\n`);
  else console.error(line);
}

/**
 * A Measurement of `stmt` (sync or async; it frees what it makes): WARMUP untimed runs, then
 * Timer.adaptiveAutorange({ threshold, maxRunTime: budget }); `sync` lists the devices waited for at the end of each
 * timed block.
 */
export async function measure({ stmt, sync, label, subLabel, description, budget, threshold }) {
  const timer = new sn.benchmark.Timer({
    stmt,
    sync,
    label,
    subLabel,
    description,
    setup: async () => {
      for (let i = 0; i < WARMUP; i++) await stmt();
    },
  });
  progress?.bar.update({ name: [label, subLabel, description].filter((s) => s).join(' · ') });
  try {
    return await timer.adaptiveAutorange({ threshold, maxRunTime: budget });
  } finally {
    progress?.bar.increment();
  }
}

/** Milliseconds with about three significant digits. */
export const fmtMs = (ms) => (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0));

/**
 * "12.3 (IQR 0.41)": a Measurement's median (then `unit`, e.g. ' ms') and IQR in ms, "(!)" where PyTorch's Timer would warn, and the count of
 * measurements where it is under 4 (the budget ran out first; an IQR of so few says little).
 */
export const medianIqr = (m, unit = '') => {
  const n = m.times.length;
  return `${fmtMs(m.median * 1e3)}${unit} (IQR ${fmtMs(m.iqr * 1e3)}${n < 4 ? `, ${n} measurement${n > 1 ? 's' : ''}` : ''})${m.hasWarnings ? ' (!)' : ''}`;
};

/** One line for the log: median, IQR, quartiles, how many measurements of how many runs. */
export const describe = (m) =>
  `median ${fmtMs(m.median * 1e3)} ms, IQR ${fmtMs(m.iqr * 1e3)} ms (${fmtMs(m.p25 * 1e3)} to ${fmtMs(m.p75 * 1e3)}), ` +
  `${m.times.length} measurement${m.times.length > 1 ? 's' : ''} of ${m.numberPerRun} run${m.numberPerRun > 1 ? 's' : ''}${m.hasWarnings ? ', IQR over 10% of the median' : ''}`;

/** How a table's times were taken, for the sentence under its header. */
export const method = ({ budget, threshold }) =>
  `Median and IQR (ms) by \`sn.benchmark.Timer\`: ${WARMUP} warm-up runs, then \`adaptiveAutorange\` (measurements of k runs each, ` +
  `k chosen by the Timer; the device synchronised inside the timed region) until the IQR is under ${threshold * 100}% of the median ` +
  `or ${budget} s are spent; "(!)" marks an IQR over 10% of the median.`;

export const loadAverage = () => os.loadavg()[0].toFixed(1);

/** Date (UTC), CPU, cores, memory, Node, the load average before (`load0`) and now, and the WebGPU adapter. */
export function machineLine(load0) {
  const cpus = os.cpus();
  return `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} cores, ` +
    `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB · load average ${load0} before, ${loadAverage()} after · Node ${process.version} · ` +
    `${sn.adapterInfo()?.line ?? 'no WebGPU adapter'}`;
}
