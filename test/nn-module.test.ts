import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';

const { nn } = sn;

// nn.Module as PyTorch users write it: fields register children, parameters and buffers in
// assignment order; containers; state dicts with PyTorch's keys, order and error reports; modes,
// apply, dtype and device moves; the repr PyTorch prints (compared with PyTorch 1.13's output).

class Block extends nn.Module {
  fc: sn.nn.Linear;
  act = new nn.ReLU();
  constructor(n: number) {
    super();
    this.fc = new nn.Linear(n, n, { bias: false });
  }
  forward(x: Tensor): Tensor {
    return this.act.forward(this.fc.forward(x));
  }
}

class Net extends nn.Module {
  fc1 = new nn.Linear(4, 8);
  act = new nn.ReLU();
  blocks = new nn.ModuleList([new nn.Linear(8, 8, { bias: false }), new nn.Identity()]);
  heads = new nn.ModuleDict({ cls: new nn.Linear(8, 3) });
  feat = new nn.Sequential({ conv: new nn.Conv2d(3, 8, 3, { padding: 1 }), bn: new nn.BatchNorm2d(8), pool: new nn.MaxPool2d(2) });
  norm = new nn.LayerNorm(8);
  drop = new nn.Dropout(0.1);
  scale: Tensor;
  notAParameter = sn.ones([2]);
  constructor() {
    super();
    this.scale = new nn.Parameter(sn.full([1], 2));
  }
  forward(x: Tensor): Tensor {
    let y = this.act.forward(this.fc1.forward(x));
    for (const b of this.blocks) y = (b as sn.nn.Linear).forward(y);
    return this.heads.get('cls')!.forward(this.norm.forward(y) as never) as Tensor;
  }
}

const PYTORCH_REPR = `Net(
  (fc1): Linear(in_features=4, out_features=8, bias=True)
  (act): ReLU()
  (blocks): ModuleList(
    (0): Linear(in_features=8, out_features=8, bias=False)
    (1): Identity()
  )
  (heads): ModuleDict(
    (cls): Linear(in_features=8, out_features=3, bias=True)
  )
  (feat): Sequential(
    (conv): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    (bn): BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (pool): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  )
  (norm): LayerNorm((8,), eps=1e-05, elementwise_affine=True)
  (drop): Dropout(p=0.1, inplace=False)
)`;

describe('nn.Module', () => {
  it('registers modules and Parameters assigned to fields, in assignment order, with PyTorch state-dict keys', () => {
    const net = new Net();
    expect([...net.namedChildren()].map(([k]) => k)).toEqual(['fc1', 'act', 'blocks', 'heads', 'feat', 'norm', 'drop']);
    expect(Object.keys(net.stateDict())).toEqual([
      'scale', 'fc1.weight', 'fc1.bias', 'blocks.0.weight', 'heads.cls.weight', 'heads.cls.bias',
      'feat.conv.weight', 'feat.conv.bias', 'feat.bn.weight', 'feat.bn.bias', 'feat.bn.running_mean', 'feat.bn.running_var', 'feat.bn.num_batches_tracked',
      'norm.weight', 'norm.bias',
    ]);
    expect([...net.namedParameters()].map(([k]) => k)).toEqual(Object.keys(net.stateDict()).filter((k) => !k.includes('running') && !k.includes('num_batches')));
    expect([...net.namedBuffers()].map(([k]) => k)).toEqual(['feat.bn.running_mean', 'feat.bn.running_var', 'feat.bn.num_batches_tracked']);
    expect(net.scale instanceof nn.Parameter).toBe(true);
    expect(net.notAParameter instanceof nn.Parameter).toBe(false);
    expect(net.modules().length).toBe(14);
    expect(net.numParameters()).toBe(1 + 4 * 8 + 8 + 64 + 8 * 3 + 3 + 3 * 8 * 9 + 8 + 8 + 8 + 8 + 8);
    // Reassigning a field replaces what is registered; a plain tensor field is not state.
    const block = new Block(3);
    expect(Object.keys(block.stateDict())).toEqual(['fc.weight']);
    block.fc = new nn.Linear(3, 3);
    expect(Object.keys(block.stateDict())).toEqual(['fc.weight', 'fc.bias']);
    // PyTorch's register_buffer(name, tensor, persistent): a non-persistent buffer is state, not checkpoint.
    block.registerBuffer('cache', sn.zeros([2]), false);
    block.registerBuffer('steps', sn.zeros([1]));
    expect([...block.namedBuffers()].map(([k]) => k)).toEqual(['cache', 'steps']);
    expect(Object.keys(block.stateDict())).toEqual(['steps', 'fc.weight', 'fc.bias']); // own state first, then children's, as PyTorch orders it
  });

  it('prints the module tree as PyTorch does', () => {
    expect(String(new Net())).toBe(PYTORCH_REPR);
    expect([new nn.GELU(), new nn.Flatten(), new nn.AdaptiveAvgPool2d(1), new nn.Embedding(5, 3, { paddingIdx: 4 }), new nn.GroupNorm(2, 4), new nn.AvgPool2d(2, { stride: 1 }), new nn.Conv2d(6, 4, [3, 2], { groups: 2, bias: false, stride: 2 })].map(String)).toEqual([
      "GELU(approximate='none')", 'Flatten(start_dim=1, end_dim=-1)', 'AdaptiveAvgPool2d(output_size=1)', 'Embedding(5, 3, padding_idx=4)', 'GroupNorm(2, 4, eps=1e-05, affine=True)',
      'AvgPool2d(kernel_size=2, stride=1, padding=0)', 'Conv2d(6, 4, kernel_size=(3, 2), stride=(2, 2), groups=2, bias=False)',
    ]);
  });

  it('loadStateDict reports missing and unexpected keys as PyTorch does, strict or not', async () => {
    const a = new Net(), b = new Net();
    const { 'fc1.bias': _, ...partial } = a.stateDict();
    const extra = sn.zeros([1]);
    expect(() => b.loadStateDict({ ...partial, 'fc9.weight': extra })).toThrow(
      'Error(s) in loading state_dict for Net:\n\tUnexpected key(s) in state_dict: "fc9.weight".\n\tMissing key(s) in state_dict: "fc1.bias".',
    );
    expect(b.loadStateDict({ ...partial, 'fc9.weight': extra }, { strict: false })).toEqual({ missingKeys: ['fc1.bias'], unexpectedKeys: ['fc9.weight'] });
    expect(await b.fc1.weight.toArray()).toEqual(await a.fc1.weight.toArray());
    expect(b.fc1.weight instanceof nn.Parameter).toBe(true);
    expect(() => b.loadStateDict({ ...a.stateDict(), scale: sn.zeros([2]) })).toThrow(/size mismatch for scale: copying a param with shape \[2\] from checkpoint, the shape in current model is \[1\]/);
  });

  it('train/eval reach every module; apply visits children first', () => {
    const net = new Net().eval();
    expect(net.modules().every((m) => !m.training)).toBe(true);
    net.train();
    expect(net.feat.training && (net.feat.children()[1] as sn.nn.Module).training).toBe(true);
    const seen: string[] = [];
    new Block(2).apply((m) => seen.push(m.constructor.name));
    expect(seen).toEqual(['Linear', 'ReLU', 'Block']);
  });

  it('containers: ModuleList indexing and append, ModuleDict by key, Sequential with names or positions', async () => {
    const list = new nn.ModuleList([new nn.ReLU()]).append(new nn.Linear(2, 2));
    expect(list.length).toBe(2);
    expect(list.at(-1)).toBeInstanceOf(nn.Linear);
    expect(list[1]).toBe(list.at(-1));
    expect(() => list.at(2)).toThrow(/ModuleList: index 2 is out of range for 2 modules/);
    expect(Object.keys(list.stateDict())).toEqual(['1.weight', '1.bias']);
    const dict = new nn.ModuleDict({ a: new nn.ReLU() });
    dict.set('b', new nn.Identity());
    expect(dict.keys()).toEqual(['a', 'b']);
    expect(() => dict.set('keys', new nn.ReLU())).toThrow(/would shadow a member/);
    const seq = new nn.Sequential({ fc: new nn.Linear(3, 2), act: new nn.ReLU() });
    expect(Object.keys(seq.stateDict())).toEqual(['fc.weight', 'fc.bias']);
    const x = sn.randn([4, 3], { seed: 1 });
    const want = sn.relu(sn.linear(x, (seq.layers[0] as sn.nn.Linear).weight, (seq.layers[0] as sn.nn.Linear).bias));
    expect(await seq.forward(x).toArray()).toEqual(await want.toArray());
    expect(new nn.Identity().forward(x)).toBe(x);
  });

  it('half/float/to(dtype) convert floating-point state only; toDevice moves everything and back', async () => {
    const net = new Net().half();
    expect(net.fc1.weight.dtype).toBe('float16');
    expect(net.stateDict()['feat.bn.num_batches_tracked']!.dtype).toBe('int32');
    expect(net.scale instanceof nn.Parameter).toBe(true);
    net.float();
    expect(net.heads.get('cls')!.stateDict().weight!.dtype).toBe('float32');
    const before = await net.fc1.weight.toArray();
    await net.toDevice('webgpu');
    expect(net.parameters().every((p) => p.device === 'webgpu') && net.buffers().every((b) => b.device === 'webgpu')).toBe(true);
    expect(() => net.to('cpu')).toThrow(/to: moving Net from webgpu to cpu needs a GPU readback, which is asynchronous: use `await module.toDevice\('cpu'\)`/);
    await net.toDevice('cpu');
    expect(net.fc1.weight.device).toBe('cpu');
    expect(await net.fc1.weight.toArray()).toEqual(before);
  });
});
