// The web demo: sinter/ocr on an image you pick or drop, boxes and text drawn over it, per-stage times, the detector's
// per-kernel profile and its fused graph (the JIT's DOT, rendered by @viz-js/viz). Bundled by examples/web/build.mjs.
import { instance as vizInstance } from '@viz-js/viz';
import * as sn from '../../src/index.ts';
import { loadOcr } from '../../src/ocr/index.ts';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const status = (text) => ($('status').textContent = text);
let image = null;
/** The engine for the current device, execution mode and fusion strategy, and how it was made: rebuilt when one changes. */
let current = null;
const timings = new Map();

async function engineFor(device, jit, fusion) {
  if (current && current.device === device && current.jit === jit && current.fusion === fusion) return current.engine;
  current?.engine.dispose();
  const keys = await (await fetch('models/keys.txt')).text();
  const read = {};
  const onProgress = ({ model, phase, loaded, total }) => {
    read[model] = { loaded, total: total ?? loaded, phase };
    const parts = Object.entries(read).map(([m, r]) => `${m} ${r.phase === 'parsed' ? 'parsed' : `${(r.loaded / 2 ** 20).toFixed(1)}/${(r.total / 2 ** 20).toFixed(1)} MiB`}`);
    status(`loading the models onto ${device}: ${parts.join(', ')}`);
  };
  const engine = await loadOcr({ device, jit, fusion, models: { det: 'models/det.onnx', rec: 'models/rec.onnx', keys }, onProgress });
  current = { device, jit, fusion, engine };
  timings.clear();
  return engine;
}

async function chooseDevice(choice) {
  const device = await sn.init({ device: choice });
  const info = sn.adapterInfo();
  $('device-line').textContent = device === 'webgpu' ? `device: WebGPU — ${info?.line ?? ''}` : `device: CPU${choice === 'auto' ? ' (auto: no hardware WebGPU adapter, so the CPU backend)' : ''}`;
  return device;
}

function draw(lines) {
  const canvas = $('canvas');
  canvas.width = image.width;
  canvas.height = image.height;
  const ctx = canvas.getContext('2d');
  ctx.putImageData(new ImageData(new Uint8ClampedArray(image.data), image.width, image.height), 0, 0);
  ctx.lineWidth = 2;
  ctx.strokeStyle = '#d21e3c';
  ctx.fillStyle = '#d21e3c';
  ctx.font = '12px sans-serif';
  lines.forEach(({ box, score }, i) => {
    ctx.beginPath();
    box.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.stroke();
    ctx.fillText(`${i + 1} (${score.toFixed(2)})`, box[0][0], Math.max(10, box[0][1] - 3));
  });
  $('lines').replaceChildren(...lines.map((l) => Object.assign(document.createElement('li'), { textContent: l.text })));
}

function showTimes(times) {
  // Cold is the first read with this device, mode, fusion and image size (a new size is traced and compiled anew).
  const key = `${current.device}/${current.jit}/${current.fusion}/${image.width}x${image.height}`;
  const cold = timings.get(key) ?? times;
  timings.set(key, cold);
  const names = { detPre: 'detector input', det: 'detector', boxes: 'DB boxes', recPre: 'crops', rec: 'recogniser', decode: 'CTC decoding', total: 'total' };
  $('times').tBodies[0].replaceChildren(...Object.entries(names).map(([k, name]) => {
    const tr = document.createElement('tr');
    const warm = cold === times ? '—' : times[k].toFixed(1);
    tr.innerHTML = `<td>${name}</td><td>${cold[k].toFixed(1)}</td><td>${warm}</td>`;
    return tr;
  }));
}

async function showGraph(engine, report) {
  if (!report) {
    $('graph').textContent = 'eager execution: no fused graph';
    return;
  }
  const viz = await vizInstance();
  const dot = engine.models.det.graph.toDot(report.groups);
  $('graph').replaceChildren(viz.renderSVGElement(dot));
}

async function run() {
  if (!image) return;
  try {
    const device = await chooseDevice($('device').value);
    const jit = $('execution').value === 'jit';
    // Fusion only shapes traced models: eager execution runs op by op.
    $('fusion').disabled = !jit;
    const engine = await engineFor(device, jit, $('fusion').value);
    status(`reading on ${device}…`);
    // With profile, each model also runs once under model.profile (not counted in the stage times).
    const { lines, times, kernels } = await engine.read(image, { profile: jit });
    draw(lines);
    showTimes(times);
    $('kernels').textContent = kernels.det ? String(kernels.det) : 'eager execution: run op by op, no compiled kernels to profile';
    await showGraph(engine, kernels.det);
    status(`done: ${lines.length} line${lines.length === 1 ? '' : 's'} on ${device}`);
  } catch (e) {
    status(`error: ${e.message}`);
    console.error(e);
  }
}

async function load(blob) {
  const bitmap = await createImageBitmap(blob);
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d');
  ctx.drawImage(bitmap, 0, 0);
  const { data, width, height } = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  image = { width, height, data: new Uint8Array(data.buffer) };
  await run();
}

$('file').addEventListener('change', (e) => e.target.files[0] && load(e.target.files[0]));
$('again').addEventListener('click', run);
for (const id of ['device', 'execution', 'fusion']) $(id).addEventListener('change', run);
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files[0]) load(e.dataTransfer.files[0]);
});
// ?device=cpu&execution=jit&fusion=none preselects the switches.
for (const id of ['device', 'execution', 'fusion']) if (params.get(id)) $(id).value = params.get(id);
load(await (await fetch('sample.png')).blob());
