import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';

// Errors name the op, the shapes/dtypes involved and what is wrong. Op families test their own
// argument checks beside their property tests; these are the cross-cutting ones.
describe('errors', () => {
  it('broadcasting mismatches name both shapes and the dim', () => {
    const a = sn.zeros([2, 3]), b = sn.zeros([4, 3]);
    expect(() => sn.add(a, b)).toThrow('add: shapes [2, 3] and [4, 3] cannot be broadcast together (dim -2: 2 vs 4)');
    expect(() => sn.where(sn.ones([2], { dtype: 'bool' }), sn.zeros([3]), 0)).toThrow(/where: shapes \[2\] and \[3\] cannot be broadcast together/);
  });

  it('wrong dtypes are refused with the tensor described', () => {
    expect(() => sn.where(sn.zeros([2]), 1, 0)).toThrow('where: condition must be a bool tensor, got tensor(float32, [2]) (compare with a value first, e.g. gt(x, 0))');
  });

  it('bad dims say the valid range', () => {
    expect(() => sn.zeros([2, 3]).transpose(0, 2)).toThrow('transpose: dim 2 is out of range for a tensor of rank 2 (expected an integer in [-2, 1])');
    expect(() => sn.zeros([2, 3]).permute(0, 0)).toThrow(/permute: dims \[0,0\] repeat a dim/);
    expect(() => sn.zeros([2, 3]).permute(0)).toThrow(/permute: expected 2 dims for tensor\(float32, \[2, 3\]\), got \[0\]/);
    expect(() => sn.zeros([2]).slice(0, 0, 2, 0)).toThrow(/slice: step must be a positive integer, got 0/);
  });

  it('bad options are named', () => {
    const x = sn.zeros([2]);
    expect(() => sn.gelu(x, { approximate: 'fast' as 'tanh' })).toThrow(`gelu: approximate must be 'none' or 'tanh', got "fast"`);
    expect(() => sn.div(x, 2, { roundingMode: 'up' as 'floor' })).toThrow(/div: roundingMode must be 'trunc', 'floor' or null, got "up"/);
    expect(() => sn.leakyRelu(x, { negativeSlope: 'a' as unknown as number })).toThrow(/leakyRelu: negativeSlope must be a number/);
    expect(() => sn.clamp(x)).toThrow('clamp: at least one of min and max must be given');
    expect(() => sn.add(x, 1, { alpha: NaN })).toThrow(/add: alpha must be a finite number/);
  });

  it('non-tensor arguments are named', () => {
    expect(() => sn.exp([1, 2] as unknown as sn.Tensor)).toThrow('exp: argument 0 must be a Tensor, got Array');
    expect(() => sn.add(1, 2)).toThrow('add: expected at least one Tensor operand, got two numbers');
    expect(() => sn.mul(sn.zeros([1]), '2' as unknown as number)).toThrow(/mul: operands must be Tensors or numbers, got string/);
  });

  it('devices: unknown devices, and mixing devices (test/setup.ts opened WebGPU)', async () => {
    await expect(sn.init({ device: 'tpu' as 'cpu' })).rejects.toThrow(/init: unknown device "tpu"/);
    expect(() => sn.zeros([1], { device: 'gpu' as 'cpu' })).toThrow(/zeros: unknown device "gpu"/);
    const g = sn.ones([2], { device: 'webgpu' }), c = sn.ones([2], { device: 'cpu' });
    expect(g.device).toBe('webgpu');
    expect(() => sn.add(g, c)).toThrow('add: expected all tensors on one device, but tensor(float32, [2]) is on webgpu, tensor(float32, [2]) is on cpu; move them with .to(device)');
  });
});
