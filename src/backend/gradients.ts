// tf.grad support without a bundler.
//
// Why this is needed: the CommonJS build of @tensorflow/tfjs-core that Node loads (dist/tf-core.node.js) registers no
// gradient functions and no chained tensor methods (x.reshape(...)). In the browser the union package @tensorflow/tfjs
// does it by importing tfjs-core's ES-module sources (dist/register_all_gradients.js and
// dist/public/chained_ops/register_all_chained_ops.js); its Node build (tf.node.js) has them inlined by rollup, at the
// price of depending on tfjs-layers, -converter, -data and -backend-webgl. Those ES-module sources ship in every
// install of tfjs-core, but Node cannot load them as they are: their imports have no file extension
// ('./gradients/Abs_grad') and tfjs-core's package.json does not say "type": "module".
//
// What we do: Node's own module loader loads them, with two small loader hooks (node:module register, Node >= 20.6)
// that apply ONLY to files reached from those two entry points (marked by a URL fragment): a relative import without
// an extension gets '.js', and the file is read as an ES module. Nothing is bundled or evaluated by hand, and the
// hooks leave every other module alone (the CommonJS tfjs-core the rest of the program uses included). The
// sources register into tfjs's global registries (gradient registry, global Tensor class), which the CommonJS copy
// reads, so tf.grad / tf.variableGrads work on every backend. Alternatives considered: depending on the union
// package (four more packages, plus webgl, for one side effect), or writing our own gradient for each kernel
// (re-deriving ~100 gradients that tfjs-core already ships and tests).
import { createRequire, register } from 'node:module';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { registerWasmGradientKernels } from './wasm_grads.js';

const TAG = '#karlo-tfjs-core-esm';

// The loader hooks (run by Node in its loader thread). Only URLs carrying TAG are touched.
const HOOKS = `
const TAG = ${JSON.stringify(TAG)};
export async function resolve(specifier, context, next) {
  const parent = context.parentURL;
  if (parent && parent.endsWith(TAG) && (specifier.startsWith('./') || specifier.startsWith('../'))) {
    let u = new URL(specifier, parent);
    if (!/\\.m?js$/.test(u.pathname)) u = new URL(u.pathname + '.js', u);
    return { url: u.href.split('#')[0] + TAG, format: 'module', shortCircuit: true };
  }
  return next(specifier, context);
}
export async function load(url, context, next) {
  if (url.endsWith(TAG)) return next(url, { ...context, format: 'module' });
  return next(url, context);
}
`;

let pending: Promise<void> | undefined;

/**
 * Registers every tfjs-core gradient and the chained tensor methods, and the convolution-gradient kernel
 * tfjs-backend-wasm lacks (./wasm_grads.ts). Idempotent; ~1 s the first time.
 */
export function registerGradients(): Promise<void> {
  pending ??= (async () => {
    registerWasmGradientKernels();
    if (tf.getGradient('Multiply') && typeof (tf.Tensor.prototype as unknown as { square?: unknown }).square === 'function') return;
    const require = createRequire(import.meta.url);
    const entry = require.resolve('@tensorflow/tfjs-core/dist/register_all_gradients.js');
    const chained = entry.replace(/register_all_gradients\.js$/, 'public/chained_ops/register_all_chained_ops.js');
    register(`data:text/javascript,${encodeURIComponent(HOOKS)}`);
    await import(pathToFileURL(entry).href + TAG);
    await import(pathToFileURL(chained).href + TAG);
    if (!tf.getGradient('Multiply') || !tf.getGradient('Conv2D') || !tf.getGradient('BatchMatMul')) {
      throw new Error('registering the tfjs-core gradients failed (tfjs-core/dist/register_all_gradients.js)');
    }
  })();
  return pending;
}
