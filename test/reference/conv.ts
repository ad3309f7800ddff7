// Float64 references for 2-d convolutions, from the definitions (independent of src/): conv2d gathers
// each output from its window; convTranspose2d scatters each input pixel through the kernel.
import type { Ref } from './core.js';
import type { ProductRef } from './linalg.js';

export interface ConvRefOptions {
  stride: [number, number];
  /** [h, w] on both sides, or PyTorch's 'valid' / 'same'. */
  padding: [number, number] | 'valid' | 'same';
  dilation: [number, number];
  groups: number;
}

/** torch.nn.functional.conv2d for x [N, C, H, W], w [O, C/groups, kh, kw], bias [O]. */
export function conv2dRef(x: Ref, w: Ref, bias: Ref | null, o: ConvRefOptions): ProductRef {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const [O, Cg, kh, kw] = w.shape as [number, number, number, number];
  const [sh, sw] = o.stride, [dh, dw] = o.dilation;
  // 'same': total dilation·(k−1) zeros per dim, the smaller half before (top/left).
  const total = [dh * (kh - 1), dw * (kw - 1)];
  const before = o.padding === 'valid' ? [0, 0] : o.padding === 'same' ? total.map((t) => Math.floor(t / 2)) : o.padding;
  const after = o.padding === 'valid' ? [0, 0] : o.padding === 'same' ? total.map((t, d) => t - before[d]!) : o.padding;
  const OH = Math.floor((H + before[0]! + after[0]! - dh * (kh - 1) - 1) / sh) + 1;
  const OW = Math.floor((W + before[1]! + after[1]! - dw * (kw - 1) - 1) / sw) + 1;
  const Og = O / o.groups;
  const out = new Float64Array(N * O * OH * OW), mag = new Float64Array(out.length);
  let at = 0;
  for (let n = 0; n < N; n++) {
    for (let oc = 0; oc < O; oc++) {
      const g = Math.floor(oc / Og);
      for (let oh = 0; oh < OH; oh++) {
        for (let ow = 0; ow < OW; ow++, at++) {
          let s = bias ? bias.data[oc]! : 0, m = Math.abs(s);
          for (let c = 0; c < Cg; c++) {
            for (let i = 0; i < kh; i++) {
              for (let j = 0; j < kw; j++) {
                const ih = oh * sh - before[0]! + i * dh, iw = ow * sw - before[1]! + j * dw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const p = x.data[((n * C + g * Cg + c) * H + ih) * W + iw]! * w.data[((oc * Cg + c) * kh + i) * kw + j]!;
                s += p;
                m += Math.abs(p);
              }
            }
          }
          out[at] = s;
          mag[at] = m;
        }
      }
    }
  }
  const shape = [N, O, OH, OW];
  return { out: { shape, data: out }, mag: { shape, data: mag } };
}

export interface ConvTransposeRefOptions {
  stride: [number, number];
  padding: [number, number];
  outputPadding: [number, number];
  dilation: [number, number];
  groups: number;
}

/** torch.nn.functional.conv_transpose2d for x [N, Cin, H, W], w [Cin, Cout/groups, kh, kw], bias [Cout]. */
export function convTranspose2dRef(x: Ref, w: Ref, bias: Ref | null, o: ConvTransposeRefOptions): ProductRef {
  const [N, Cin, H, W] = x.shape as [number, number, number, number];
  const [, Cog, kh, kw] = w.shape as [number, number, number, number];
  const [sh, sw] = o.stride, [ph, pw] = o.padding, [dh, dw] = o.dilation;
  const OH = (H - 1) * sh - 2 * ph + dh * (kh - 1) + o.outputPadding[0] + 1;
  const OW = (W - 1) * sw - 2 * pw + dw * (kw - 1) + o.outputPadding[1] + 1;
  const Cout = Cog * o.groups, Cig = Cin / o.groups;
  const out = new Float64Array(N * Cout * OH * OW), mag = new Float64Array(out.length);
  for (let n = 0; n < N; n++) {
    for (let ci = 0; ci < Cin; ci++) {
      const g = Math.floor(ci / Cig);
      for (let ih = 0; ih < H; ih++) {
        for (let iw = 0; iw < W; iw++) {
          const v = x.data[((n * Cin + ci) * H + ih) * W + iw]!;
          for (let co = 0; co < Cog; co++) {
            for (let i = 0; i < kh; i++) {
              for (let j = 0; j < kw; j++) {
                const oh = ih * sh - ph + i * dh, ow = iw * sw - pw + j * dw;
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                const at = ((n * Cout + g * Cog + co) * OH + oh) * OW + ow;
                const p = v * w.data[((ci * Cog + co) * kh + i) * kw + j]!;
                out[at] += p;
                mag[at] += Math.abs(p);
              }
            }
          }
        }
      }
    }
  }
  if (bias) {
    for (let at = 0; at < out.length; at++) {
      const b = bias.data[Math.floor(at / (OH * OW)) % Cout]!;
      out[at] += b;
      mag[at] += Math.abs(b);
    }
  }
  const shape = [N, Cout, OH, OW];
  return { out: { shape, data: out }, mag: { shape, data: mag } };
}
