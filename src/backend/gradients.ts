// tf.grad support. The CommonJS build of @tensorflow/tfjs-core that Node loads registers no gradient functions
// and no chained tensor methods (x.reshape(...)): the union package @tensorflow/tfjs does that from tfjs-core's
// ES-module sources, whose extensionless imports Node cannot load. esbuild (already here, under tsx) bundles
// those sources once; they register into tfjs's global registries, so they serve the CommonJS copy too.
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';

let done = false;

/** Registers every tfjs-core gradient and the chained tensor methods (idempotent; ~1 s the first time). */
export async function registerGradients(): Promise<void> {
  if (done) return;
  const require = createRequire(import.meta.url);
  if (!tf.getGradient('Multiply')) {
    const { buildSync } = (await import('esbuild')) as typeof import('esbuild');
    const dist = require.resolve('@tensorflow/tfjs-core/dist/register_all_gradients.js').replace(/register_all_gradients\.js$/, '');
    const entry = [
      'register_all_gradients.js',
      'public/chained_ops/register_all_chained_ops.js',
    ].map((f) => `import ${JSON.stringify(dist + f)};`).join('\n');
    const r = buildSync({
      stdin: { contents: entry, resolveDir: dist, loader: 'js' },
      bundle: true, write: false, format: 'cjs', platform: 'node', logLevel: 'silent',
    });
    const mod = { exports: {} };
    new Function('module', 'exports', 'require', r.outputFiles[0].text)(mod, mod.exports, require);
    if (!tf.getGradient('Multiply')) throw new Error('registering the tfjs-core gradients failed');
  }
  done = true;
}
