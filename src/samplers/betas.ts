// Noise schedule and respacing for the unCLIP (DDPM) scheduler, bit-compatible with diffusers 0.25.1 on CPU.

/**
 * squaredcos_cap_v2 (Nichol & Dhariwal's cosine schedule): ᾱ(t) = cos²((t + 0.008)/1.008 · π/2),
 * β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), maxBeta). Computed in float64 like Python, then rounded to float32.
 */
export function squaredcosCapV2Betas(numTrainTimesteps: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const betas = new Float32Array(numTrainTimesteps);
  for (let i = 0; i < numTrainTimesteps; i++) {
    const t1 = i / numTrainTimesteps;
    const t2 = (i + 1) / numTrainTimesteps;
    betas[i] = Math.min(1 - alphaBar(t2) / alphaBar(t1), maxBeta);
  }
  return betas;
}

/**
 * torch.cumprod of a float32 vector on CPU: the running product is kept in double (ATen's acc_type for float on
 * CPU) and each output is rounded to float32.
 */
export function cumprodCpu(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  let acc = 1;
  for (let i = 0; i < x.length; i++) {
    acc *= x[i];
    out[i] = acc;
  }
  return out;
}

/** numpy's round (round half to even), for doubles. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * UnCLIPScheduler.set_timesteps: step_ratio = (T−1)/(N−1), round(arange(N)·step_ratio) half-to-even, reversed.
 * (N = 1 divides by zero in the reference, so it is refused here.)
 */
export function unclipTimesteps(numTrainTimesteps: number, numInferenceSteps: number): number[] {
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 2 || numInferenceSteps > numTrainTimesteps) {
    throw new Error(`steps: ${numInferenceSteps} is not an integer in [2, ${numTrainTimesteps}] (UnCLIPScheduler respaces with (T-1)/(steps-1))`);
  }
  const ratio = (numTrainTimesteps - 1) / (numInferenceSteps - 1);
  const ts: number[] = [];
  for (let i = numInferenceSteps - 1; i >= 0; i--) ts.push(roundHalfEven(i * ratio));
  return ts;
}
