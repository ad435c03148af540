import { GraphBuilder } from '../../src/onnx/builder.js';
const g = new GraphBuilder();
const x = g.input('x', 'float32', [1, 4]);
const a = g.node('Add', [x, x]);
const parts = g.nodeMulti('Split', [a, g.constant('int64', [2], [2, 2])], { axis: 1 }, 2);
console.log(a, parts);
const b = g.node('Add', [parts[0]!, parts[1]!]);
console.log(b);
