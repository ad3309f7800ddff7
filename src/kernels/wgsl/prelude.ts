// WGSL helper functions that generated kernels call as `sn_name(...)`. `withPrelude` prepends the
// ones a module uses. They pin down what WGSL leaves to the implementation (pack2x16float and
// float→int conversions of out-of-range values, pow of negative bases, integer division by zero,
// NaN in min/max) to what the CPU backend computes, and supply what WGSL lacks (erf, log1p, expm1).

const HELPERS: Record<string, string> = {
  // ±inf and NaN as runtime values: WGSL rejects them in constant expressions.
  sn_inf: `var<private> sn_inf_bits = 0x7f800000u;
fn sn_inf() -> f32 { return bitcast<f32>(sn_inf_bits); }`,
  sn_nan: `var<private> sn_nan_bits = 0x7fc00000u;
fn sn_nan() -> f32 { return bitcast<f32>(sn_nan_bits); }`,

  sn_isnan: `fn sn_isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }`,

  // Truncates toward zero and wraps modulo 2^32 like JavaScript's x|0; NaN and ±inf give 0.
  sn_f2i: `fn sn_f2i(x: f32) -> i32 {
  let b = bitcast<u32>(x);
  let e = i32((b >> 23u) & 255u) - 127;
  if (e < 31) { return i32(x); }
  if (e > 54) { return 0; }
  let m = ((b & 0x7fffffu) | 0x800000u) << u32(e - 23);
  return select(bitcast<i32>(m), -bitcast<i32>(m), x < 0.0);
}`,

  // Rounds to the nearest binary16 value (ties to even), kept as f32; ≥ 65520 in magnitude becomes ±inf.
  sn_f16: `fn sn_f16(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  let a = b & 0x7fffffffu;
  let s = b & 0x80000000u;
  if (a >= 0x7f800000u) { return x; }
  if (a >= 0x477ff000u) { return bitcast<f32>(s | 0x7f800000u); }
  if (a < 0x38800000u) { return bitcast<f32>(s | bitcast<u32>(round(bitcast<f32>(a) * 16777216.0) * 5.9604644775390625e-8)); }
  return bitcast<f32>(s | ((a + 0xfffu + ((a >> 13u) & 1u)) & 0xffffe000u));
}`,

  // The binary16 bits of an f32 that holds a binary16 value (see sn_f16).
  sn_f2h: `fn sn_f2h(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  let a = b & 0x7fffffffu;
  let s = (b >> 16u) & 0x8000u;
  if (a >= 0x7f800000u) { return s | 0x7c00u | select(0u, 0x200u, a > 0x7f800000u); }
  if (a < 0x38800000u) { return s | u32(bitcast<f32>(a) * 16777216.0); }
  return s | ((a - 0x38000000u) >> 13u);
}`,

  sn_h2f: `fn sn_h2f(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 31u;
  let m = h & 0x3ffu;
  if (e == 0u) { return bitcast<f32>(s | bitcast<u32>(f32(m) * 5.9604644775390625e-8)); }
  if (e == 31u) { return bitcast<f32>(s | 0x7f800000u | (m << 13u)); }
  return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}`,

  // sin and cos by Cephes' polynomials on [-π/4, π/4] after subtracting the nearest multiple of
  // π/2 (in three parts, so the reduction is exact for moderate x): WGSL's built-ins are only held
  // to an absolute 2^-11, and SwiftShader's err by 2e-4 near ±π.
  sn_sincos_r: `fn sn_sincos_r(x: f32, q: f32) -> f32 {
  return ((x - q * 1.5703125) - q * 4.837512969970703125e-4) - q * 7.54978995489188216e-8;
}`,
  sn_sin_poly: `fn sn_sin_poly(r: f32) -> f32 {
  let z = r * r;
  return r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
}`,
  sn_cos_poly: `fn sn_cos_poly(r: f32) -> f32 {
  let z = r * r;
  return 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
}`,
  sn_sin: `fn sn_sin(x: f32) -> f32 {
  let q = round(x * 0.6366197723675814);
  let r = sn_sincos_r(x, q);
  let j = i32(q) & 3;
  let v = select(sn_sin_poly(r), sn_cos_poly(r), (j & 1) == 1);
  return select(v, -v, j >= 2);
}`,
  sn_cos: `fn sn_cos(x: f32) -> f32 {
  let q = round(x * 0.6366197723675814);
  let r = sn_sincos_r(x, q);
  let j = i32(q) & 3;
  let v = select(sn_cos_poly(r), sn_sin_poly(r), (j & 1) == 1);
  return select(v, -v, j == 1 || j == 2);
}`,

  // Series near 0, where exp(x) - 1 would cancel.
  sn_expm1: `fn sn_expm1(x: f32) -> f32 {
  if (abs(x) < 0.5) {
    return x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0 + x * (1.0 / 720.0 + x * (1.0 / 5040.0 + x * (1.0 / 40320.0))))))));
  }
  return exp(x) - 1.0;
}`,

  // 2·atanh(x / (2 + x)) near 0, where log(1 + x) would lose x's low bits.
  sn_log1p: `fn sn_log1p(x: f32) -> f32 {
  if (abs(x) < 0.5) {
    let z = x / (2.0 + x);
    let z2 = z * z;
    return 2.0 * z * (1.0 + z2 * (1.0 / 3.0 + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0 + z2 * (1.0 / 9.0 + z2 * (1.0 / 11.0 + z2 * (1.0 / 13.0 + z2 / 15.0)))))));
  }
  return log(1.0 + x);
}`,

  // Through expm1, so it is accurate near 0 and never divides inf by inf.
  sn_tanh: `fn sn_tanh(x: f32) -> f32 {
  if (sn_isnan(x)) { return x; }
  let e = sn_expm1(-2.0 * min(abs(x), 20.0));
  let t = -e / (2.0 + e);
  return select(t, -t, x < 0.0);
}`,

  // The CPU's method in f32: the positive series 2/√π·e^(−x²)·Σ 2ⁿx^(2n+1)/(2n+1)!! below 2.5, the continued fraction of erfc up to 4.
  sn_erf: `fn sn_erf(x: f32) -> f32 {
  if (sn_isnan(x)) { return x; }
  let a = abs(x);
  var r = 1.0;
  if (a < 2.5) {
    var term = a;
    var sum = a;
    for (var n = 1; n < 64; n++) {
      term *= 2.0 * a * a / f32(2 * n + 1);
      sum += term;
      if (term <= sum * 1e-8) { break; }
    }
    r = 1.1283791670955126 * exp(-a * a) * sum;
  } else if (a < 4.0) {
    var f = a;
    for (var k = 24; k >= 1; k--) { f = a + f32(k) * 0.5 / f; }
    r = 1.0 - exp(-a * a) * 0.5641895835477563 / f;
  }
  return select(r, -r, x < 0.0);
}`,

  // erfc(x) = 1 - erf(x) without the cancellation (Numerical Recipes' erfcc, relative error < 1.2e-7),
  // so that GELU's 1 + erf(x/√2) keeps its digits for negative x.
  sn_erfc: `fn sn_erfc(x: f32) -> f32 {
  if (sn_isnan(x)) { return x; }
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
    + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return select(r, 2.0 - r, x < 0.0);
}`,

  // Math.pow's cases: negative bases need integer exponents (sign from parity), 0 to a negative power is inf.
  sn_pow: `fn sn_pow(x: f32, y: f32) -> f32 {
  if (y == 0.0) { return 1.0; }
  if (sn_isnan(x) || sn_isnan(y)) { return x + y; }
  if (x == 0.0) { return select(0.0, sn_inf(), y < 0.0); }
  let r = pow(abs(x), y);
  if (x > 0.0) { return r; }
  if (fract(y) != 0.0) { return sn_nan(); }
  return select(r, -r, fract(y * 0.5) != 0.0);
}`,

  // Exact integer powers, wrapping; negative exponents give what truncating 1/x^|y| gives.
  sn_ipow: `fn sn_ipow(x: i32, y: i32) -> i32 {
  if (y < 0) {
    if (x == 1) { return 1; }
    if (x == -1) { return select(1, -1, (y & 1) != 0); }
    return 0;
  }
  var r = 1;
  var b = x;
  var e = y;
  while (e > 0) {
    if ((e & 1) != 0) { r *= b; }
    b *= b;
    e >>= 1;
  }
  return r;
}`,

  // Integer division by zero gives 0, as the CPU's truncation of ±inf and NaN does.
  sn_idiv_trunc: `fn sn_idiv_trunc(a: i32, b: i32) -> i32 {
  if (b == 0) { return 0; }
  return a / b;
}`,

  sn_idiv_floor: `fn sn_idiv_floor(a: i32, b: i32) -> i32 {
  if (b == 0) { return 0; }
  let q = a / b;
  return select(q, q - 1, (a % b != 0) && ((a < 0) != (b < 0)));
}`,

  // Math.max/min: NaN wins.
  sn_max: `fn sn_max(a: f32, b: f32) -> f32 {
  if (sn_isnan(a) || sn_isnan(b)) { return a + b; }
  return max(a, b);
}`,
  sn_min: `fn sn_min(a: f32, b: f32) -> f32 {
  if (sn_isnan(a) || sn_isnan(b)) { return a + b; }
  return min(a, b);
}`,

  // The same for f16 (kernels computing float16 natively; the module enables f16). WGSL has no 16-bit
  // integer, so the bits come from a vec2<f16> as one u32.
  sn_isnan_h: `fn sn_isnan_h(x: f16) -> bool { return (bitcast<u32>(vec2<f16>(x, 0.0h)) & 0x7fffu) > 0x7c00u; }`,
  sn_max_h: `fn sn_max_h(a: f16, b: f16) -> f16 {
  if (sn_isnan_h(a) || sn_isnan_h(b)) { return a + b; }
  return max(a, b);
}`,
  sn_min_h: `fn sn_min_h(a: f16, b: f16) -> f16 {
  if (sn_isnan_h(a) || sn_isnan_h(b)) { return a + b; }
  return min(a, b);
}`,
};

const CALL = /\bsn_[a-z0-9_]+(?=\()/g;

/** `source` with the definitions of the `sn_*` helpers it calls (and those they call) prepended. */
export function withPrelude(source: string): string {
  const used: string[] = [];
  const visit = (text: string): void => {
    for (const name of text.match(CALL) ?? []) {
      if (used.includes(name)) continue;
      const def = HELPERS[name];
      if (def === undefined) throw new Error(`no WGSL helper '${name}'`);
      used.push(name);
      visit(def);
    }
  };
  visit(source);
  // WGSL requires `enable` directives before any declaration, so they move above the helpers.
  const directives = source.match(/^\s*enable [^;]+;\s*$/gm) ?? [];
  const body = directives.reduce((text, d) => text.replace(d, ''), source);
  return [...directives.map((d) => d.trim()), ...used.map((n) => HELPERS[n]!), body].join('\n\n');
}
