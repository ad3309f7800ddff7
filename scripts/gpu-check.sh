#!/usr/bin/env bash
# The checks that need a real GPU, for a lent GPU machine (see /work/shared/gpu/README.md): the
# WebGPU tests (native float16 kernels need `shader-f16`, which SwiftShader lacks, so they run only
# here), then short benchmark runs and the soak. Each step has its own time limit and logs to
# $OUT (or ./gpu-check-out); a failing step is reported and the next one still runs.
#
#   here:       bash ../shared/gpu/pack.sh vitest fast-check        # .gpu/: Node, dependencies, dist/
#   on device:  run(command: "bash .gpu/on-device.sh bash scripts/gpu-check.sh", carry: [".gpu"], timeout_s: 540)
#
# Budget: about 8 minutes in all (tests ~3, benchmarks ~4, soak ~1); trim with GPU_CHECK_ONLY=tests|bench|soak.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check-out}
mkdir -p "$out"
only=${GPU_CHECK_ONLY:-all}
status=0

step() { # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$out/summary.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$out/$name.log"
  echo "== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$out/summary.txt"
  [ "$rc" -eq 0 ] || status=1
}

# Which adapter the library picks, and why ('auto' must take the GPU here, not SwiftShader).
step adapter 60 node --input-type=module -e "
  const sn = await import('./dist/index.js');
  console.log('auto picks', await sn.init());
  await sn.init({ device: 'webgpu' });
  console.log(JSON.stringify(sn.adapterInfo()));
  if (!sn.adapterInfo().features.shaderF16) console.log('WARNING: no shader-f16 on this adapter: the native float16 test will be skipped');"

if [ "$only" = all ] || [ "$only" = tests ]; then
  # The WebGPU test files (native float16 included), the device-loss, limits, cache and soak tests.
  step tests 240 node node_modules/vitest/vitest.mjs run \
    test/webgpu-f16.test.ts test/webgpu.test.ts test/webgpu-cache.test.ts test/reliability-device-loss.test.ts \
    test/reliability-limits.test.ts test/reliability-soak.test.ts test/memory-gc.test.ts test/jit-plan.test.ts test/quant-fp16.test.ts
fi
if [ "$only" = all ] || [ "$only" = bench ]; then
  step bench-jit 150 node bench/jit.mjs --runs 5 --budget 2 --devices webgpu
  step bench-matmul-conv 100 node bench/matmul-conv.mjs
  # PP-OCR det float16 at load vs float32: native f16 storage where the adapter has shader-f16.
  step bench-fp16 90 node bench/quant-fp16.mjs --devices webgpu --models det --pages 2 --runs 3 --out "$out/quant-fp16.md"
fi
if [ "$only" = all ] || [ "$only" = soak ]; then
  step soak 120 node bench/soak.mjs --calls 10000 --every 2000 --devices webgpu
fi
cat "$out/summary.txt"
exit $status
