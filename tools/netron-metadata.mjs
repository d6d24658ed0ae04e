// A minimal onnx-metadata.json for Netron (categories and input names of the operators these graphs use).
const ops = {
  Layer: { MatMul: ['A', 'B'], Gemm: ['A', 'B', 'C'], Conv: ['X', 'W', 'B'] },
  Activation: { Relu: ['X'], Softmax: ['input'], Gelu: ['X'], Tanh: ['input'], Sigmoid: ['X'], Erf: ['input'] },
  Normalization: { LayerNormalization: ['X', 'Scale', 'B'] },
  Shape: { Reshape: ['data', 'shape'], Squeeze: ['data', 'axes'], Unsqueeze: ['data', 'axes'], Flatten: ['input'] },
  Transform: { Transpose: ['data'], Expand: ['input', 'shape'], Cast: ['input'], CastLike: ['input', 'target_type'] },
  Tensor: { Gather: ['data', 'indices'], Slice: ['data', 'starts', 'ends', 'axes', 'steps'], Concat: ['inputs'], Split: ['input', 'split'], ScatterND: ['data', 'indices', 'updates'], ScatterElements: ['data', 'indices', 'updates'], Where: ['condition', 'X', 'Y'], ConstantOfShape: ['input'], Shape: ['data'], Range: ['start', 'limit', 'delta'], NonZero: ['X'], Identity: ['input'] },
  Constant: { Constant: [] },
  '': { Add: ['A', 'B'], Sub: ['A', 'B'], Mul: ['A', 'B'], Div: ['A', 'B'], Pow: ['X', 'Y'], Sqrt: ['X'], ReduceMean: ['data', 'axes'], ReduceSum: ['data', 'axes'], ReduceProd: ['data', 'axes'], ArgMax: ['data'], Equal: ['A', 'B'], Less: ['A', 'B'], And: ['A', 'B'], Neg: ['X'], Abs: ['X'], Exp: ['input'], Log: ['input'], TopK: ['X', 'K'], Trilu: ['input', 'k'], Max: ['data_0'], Min: ['data_0'] },
};
const out = [];
for (const [category, m] of Object.entries(ops)) for (const [name, inputs] of Object.entries(m)) {
  out.push({ name, module: 'ai.onnx', version: 1, ...(category ? { category } : {}), inputs: inputs.map((n) => ({ name: n, type: 'T', ...(n === 'inputs' ? { list: true } : {}) })), outputs: [{ name: 'output', type: 'T' }] });
}
process.stdout.write(JSON.stringify(out));
