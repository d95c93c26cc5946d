// torch-compatible CPU random numbers: torch.Generator().manual_seed(s) followed by torch.randn / torch.rand
// (float32) give the same values here, call after call (state carries over, including torch's cached
// second normal sample of the scalar path).
//
// Facts reproduced (pytorch ATen: MT19937RNGEngine.h, CPUGeneratorImpl.cpp, TransformationHelper.h,
// DistributionsHelper.h, native/cpu/DistributionTemplates.h, DistributionKernels.cpp):
// - MT19937 seeded with the low 32 bits of the 64-bit seed; the first draw twists.
// - float uniform = (u32 & (2^24-1)) * 2^-24; double uniform = (u64 & (2^53-1)) * 2^-53, u64 = (first << 32) | second.
// - randn with numel >= 16 (contiguous float32): "vector path": fill all slots with float uniforms, then
//   Box-Muller in float over blocks of 16 (u1 = 1 - d[j], u2 = d[j+8]); a ragged tail re-draws 16 fresh
//   uniforms into the last 16 slots and transforms them. The cached normal is untouched.
// - randn with numel < 16: "scalar path": each element is normal_distribution<double>: the cached second
//   sample if present, else two double uniforms u1, u2, r = sqrt(-2 log1p(-u2)), theta = 2 pi u1, cache
//   r sin(theta), return r cos(theta); cast to float.
// - rand: one float uniform per element.
//
// The vector path has two flavours in torch builds: x86 AVX2 (avx_mathfun log256_ps/sincos256_ps polynomials
// in float32, FMA-contracted; what x86 PyTorch wheels and the golden fixtures use) and the portable one (libm
// logf/cosf/sinf: ARM, ATEN_CPU_CAPABILITY=default). `vectorMath` picks: 'avx2' (default, bit-identical to the
// fixtures) or 'libm' (Math.* rounded to float: an approximation of libm builds, not verified bit-exact; it
// differs from the AVX2 flavour by up to 2e-6 on the fixtures).
// The scalar path: newer torch uses log1p(-u2), older log(1 - u2); 1 - u2 is exact in double, so after the cast to
// float both give the same values in practice.
import * as tf from '@tensorflow/tfjs-core';

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER = 0x80000000;
const LOWER = 0x7fffffff;
const TWO_POW_64 = 1n << 64n;

/** torch.Generator()'s seed before manual_seed (c10 default_rng_seed_val). */
export const TORCH_DEFAULT_SEED = 67280421310721n;

/** sizeof(at::detail::CPUGeneratorImplState) on 64-bit hosts: the length of torch.Generator.get_state(). */
export const TORCH_STATE_BYTES = 5056;

export type VectorMath = 'libm' | 'avx2';

/** The vector-path flavour new generators use: env KARLO_RNG_VECTOR_MATH (avx2 | libm), default avx2. */
export function defaultVectorMath(): VectorMath {
  const v = (process.env.KARLO_RNG_VECTOR_MATH ?? 'avx2').trim().toLowerCase();
  if (v !== 'avx2' && v !== 'libm') throw new Error(`KARLO_RNG_VECTOR_MATH=${v}: expected avx2 (x86 PyTorch builds) or libm (ARM / non-AVX2 builds)`);
  return v;
}

export interface GeneratorState {
  seed: bigint;
  mt: Uint32Array;
  left: number;
  next: number;
  cachedNormal: number | null;
}

function toSeed(seed: number | bigint): bigint {
  if (typeof seed === 'number') {
    if (!Number.isFinite(seed) || !Number.isInteger(seed)) {
      throw new RangeError(`TorchGenerator: seed must be an integer, got ${seed}`);
    }
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`TorchGenerator: seed ${seed} is beyond 2^53 and not exact as a number; pass a bigint`);
    }
    seed = BigInt(seed);
  }
  if (typeof seed !== 'bigint') throw new TypeError(`TorchGenerator: seed must be a number or bigint, got ${typeof seed}`);
  if (seed >= TWO_POW_64 || seed < -(1n << 63n)) {
    throw new RangeError(`TorchGenerator: seed ${seed} is out of range [-2^63, 2^64)`);
  }
  // torch wraps negative seeds to uint64 (seed & 0xffff_ffff_ffff_ffff).
  return ((seed % TWO_POW_64) + TWO_POW_64) % TWO_POW_64;
}

function checkShape(shape: number[]): number {
  if (!Array.isArray(shape)) throw new TypeError(`TorchGenerator: shape must be an array of integers, got ${String(shape)}`);
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`TorchGenerator: bad shape [${shape.join(', ')}]: dimensions must be non-negative integers`);
    n *= d;
  }
  if (!Number.isSafeInteger(n) || n > 2 ** 31 - 1) throw new RangeError(`TorchGenerator: shape [${shape.join(', ')}] has too many elements`);
  return n;
}

const f = Math.fround;
const TWO_PI_F = f(2 * Math.PI);
const TWO_POW_M24 = 2 ** -24;
const TWO_POW_M53 = 2 ** -53;

export class TorchGenerator {
  private mt = new Uint32Array(N);
  private left = 1;
  private next = 0;
  private seed = 0n;
  /** torch's next_double_normal_sample (scalar path), persisting across calls until re-seeded. */
  private cachedNormal: number | null = null;
  /** Which torch build's vector-path math to reproduce. */
  vectorMath: VectorMath;

  constructor(seed?: number | bigint, opts: { vectorMath?: VectorMath } = {}) {
    this.vectorMath = opts.vectorMath ?? defaultVectorMath();
    this.manualSeed(seed ?? TORCH_DEFAULT_SEED);
  }

  /** torch.Generator.manual_seed: any integer in [-2^63, 2^64); only its low 32 bits seed MT19937. */
  manualSeed(seed: number | bigint): this {
    this.seed = toSeed(seed);
    const mt = this.mt;
    mt[0] = Number(this.seed & 0xffffffffn);
    for (let j = 1; j < N; j++) {
      const p = mt[j - 1];
      mt[j] = (Math.imul(1812433253, p ^ (p >>> 30)) + j) >>> 0;
    }
    this.left = 1;
    this.next = 0;
    this.cachedNormal = null;
    return this;
  }

  /** torch.Generator.initial_seed(). */
  initialSeed(): bigint {
    return this.seed;
  }

  /** A snapshot of the full state (torch get_state/set_state equivalent). */
  getState(): GeneratorState {
    return { seed: this.seed, mt: this.mt.slice(), left: this.left, next: this.next, cachedNormal: this.cachedNormal };
  }

  setState(s: GeneratorState): this {
    if (!(s.mt instanceof Uint32Array) || s.mt.length !== N) throw new TypeError('TorchGenerator.setState: mt must be a Uint32Array of 624 words');
    this.seed = s.seed;
    this.mt.set(s.mt);
    this.left = s.left;
    this.next = s.next;
    this.cachedNormal = s.cachedNormal;
    return this;
  }

  /**
   * The state as torch's `Generator.get_state()` bytes (a 5056-byte uint8 tensor: CPUGeneratorImplState as laid
   * out on 64-bit little-endian hosts: initial seed u64, left i32, seeded i32, next u64, the 624 MT words as u64,
   * normal_x/normal_y/normal_rho f64, normal_is_valid i32, then the float cache f32 + valid flag). Load it in PyTorch
   * with `g.set_state(torch.frombuffer(bytearray(b), dtype=torch.uint8))`.
   */
  toTorchState(): Uint8Array {
    const b = new Uint8Array(TORCH_STATE_BYTES);
    const dv = new DataView(b.buffer);
    dv.setBigUint64(0, this.seed, true);
    dv.setInt32(8, this.left, true);
    dv.setInt32(12, 1, true); // seeded
    dv.setBigUint64(16, BigInt(this.next), true);
    for (let i = 0; i < N; i++) dv.setBigUint64(24 + 8 * i, BigInt(this.mt[i]), true);
    if (this.cachedNormal !== null) {
      dv.setFloat64(5024, this.cachedNormal, true); // normal_y
      dv.setInt32(5040, 1, true); // normal_is_valid
    }
    return b;
  }

  /** A generator continuing the stream of torch's `Generator.get_state()` bytes (see toTorchState). */
  static fromTorchState(bytes: Uint8Array, opts: { vectorMath?: VectorMath } = {}): TorchGenerator {
    if (!(bytes instanceof Uint8Array) || bytes.byteLength !== TORCH_STATE_BYTES) {
      throw new Error(`TorchGenerator.fromTorchState: expected the ${TORCH_STATE_BYTES}-byte CPU generator state of torch.Generator.get_state(), got ${bytes?.byteLength ?? typeof bytes} bytes`);
    }
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const left = dv.getInt32(8, true);
    const seeded = dv.getInt32(12, true);
    const next = dv.getBigUint64(16, true);
    // torch's mt19937::is_valid
    if (!seeded || left <= 0 || left > N || next > BigInt(N)) {
      throw new Error(`TorchGenerator.fromTorchState: invalid mt19937 state (seeded ${seeded}, left ${left}, next ${next})`);
    }
    const mt = new Uint32Array(N);
    for (let i = 0; i < N; i++) mt[i] = Number(dv.getBigUint64(24 + 8 * i, true) & 0xffffffffn);
    const g = new TorchGenerator(0, opts);
    return g.setState({
      seed: dv.getBigUint64(0, true),
      mt,
      left,
      next: Number(next),
      cachedNormal: dv.getInt32(5040, true) ? dv.getFloat64(5024, true) : null,
    });
  }

  /** An independent copy at the same position in the stream. */
  clone(): TorchGenerator {
    const g = new TorchGenerator(0, { vectorMath: this.vectorMath });
    return g.setState(this.getState());
  }

  private twist(): void {
    const mt = this.mt;
    let k = 0;
    for (; k < N - M; k++) {
      const y = (mt[k] & UPPER) | (mt[k + 1] & LOWER);
      mt[k] = mt[k + M] ^ (y >>> 1) ^ (mt[k + 1] & 1 ? MATRIX_A : 0);
    }
    for (; k < N - 1; k++) {
      const y = (mt[k] & UPPER) | (mt[k + 1] & LOWER);
      mt[k] = mt[k + M - N] ^ (y >>> 1) ^ (mt[k + 1] & 1 ? MATRIX_A : 0);
    }
    const y = (mt[N - 1] & UPPER) | (mt[0] & LOWER);
    mt[N - 1] = mt[M - 1] ^ (y >>> 1) ^ (mt[0] & 1 ? MATRIX_A : 0);
    this.left = N;
    this.next = 0;
  }

  /** One tempered 32-bit word (torch CPUGeneratorImpl::random). */
  nextU32(): number {
    if (--this.left === 0) this.twist();
    let y = this.mt[this.next++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** float uniform in [0, 1) from one word. */
  private uniformFloat(): number {
    return (this.nextU32() & 0xffffff) * TWO_POW_M24;
  }

  /** double uniform in [0, 1) from two words (hi first): (u64 & (2^53-1)) * 2^-53. */
  private uniformDouble(): number {
    const hi = this.nextU32() & 0x1fffff; // top 21 of the 53 bits
    const lo = this.nextU32();
    return (hi * 4294967296 + lo) * TWO_POW_M53;
  }

  /** normal_distribution<double>(0, 1) with the persistent cached second sample. */
  private normalDouble(): number {
    if (this.cachedNormal !== null) {
      const v = this.cachedNormal;
      this.cachedNormal = null;
      return v;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.cachedNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** torch.rand(shape, generator) in float32. */
  rand(shape: number[]): Float32Array {
    const n = checkShape(shape);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat();
    return out;
  }

  /** torch.randn(shape, generator) in float32. */
  randn(shape: number[]): Float32Array {
    const n = checkShape(shape);
    const out = new Float32Array(n);
    if (n < 16) {
      for (let i = 0; i < n; i++) out[i] = this.normalDouble();
      return out;
    }
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat();
    const block = this.vectorMath === 'avx2' ? boxMuller16Avx2 : boxMuller16Libm;
    for (let i = 0; i < n - 15; i += 16) block(out, i);
    if (n % 16 !== 0) {
      const start = n - 16;
      for (let i = 0; i < 16; i++) out[start + i] = this.uniformFloat();
      block(out, start);
    }
    return out;
  }
}

/** torch normal_fill_16 (portable build): float math via libm logf/sqrtf/cosf/sinf, theta = float(2.0f*pi_double*u2). */
function boxMuller16Libm(d: Float32Array, o: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f(1 - d[o + j]);
    const u2 = d[o + j + 8];
    const radius = f(Math.sqrt(f(-2 * f(Math.log(u1)))));
    const theta = f(2 * Math.PI * u2);
    d[o + j] = f(radius * f(Math.cos(theta)));
    d[o + j + 8] = f(radius * f(Math.sin(theta)));
  }
}

// ---- x86 AVX2 build: normal_fill_16_AVX2 with avx_mathfun's log256_ps and sincos256_ps (Cephes polynomials) in
// float32. GCC compiles those intrinsics as plain vector arithmetic and, built with -mfma and its default
// -ffp-contract=fast, fuses each multiply feeding an add into an FMA; reproducing exactly those fusions is what
// makes the output bit-identical (128262/128262 vector-path elements of the fixtures; without the FMAs 1269 differ
// by 1 ulp). The final fmadd(n, std, mean) with std 1, mean 0 is exact and left out.

const f32b = new Float32Array(1);
const i32b = new Int32Array(f32b.buffer);

/** The float32 next to r (which is a float32) in the direction of `up`. */
function nextFloat(r: number, up: boolean): number {
  if (r === 0) {
    i32b[0] = 1;
    return up ? f32b[0] : -f32b[0];
  }
  f32b[0] = r;
  if (r > 0 === up) i32b[0]++;
  else i32b[0]--;
  return f32b[0];
}

/** Single-rounded float32 fma(a, b, c) for float32 inputs: a*b is exact in double; the sum is fixed up for double rounding. */
function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bv = s - p;
  const t = p - (s - bv) + (c - bv); // s + t == p + c exactly (TwoSum)
  const r = f(s);
  if (t === 0 || r === s) return r;
  const r2 = nextFloat(r, s > r);
  // s lies exactly halfway between two floats: the sign of t decides.
  if ((r + r2) / 2 === s) return t > 0 ? Math.max(r, r2) : Math.min(r, r2);
  return r;
}

const SQRTHF = f(0.707106781186547524);
const LOG_P = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
  -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1].map(f);
const LOG_Q1 = f(-2.12194440e-4);
const LOG_Q2 = f(0.693359375);
const u32b = new Uint32Array(f32b.buffer);

/** avx_mathfun log256_ps for one lane (input in (0, 1]). */
function logAvx(xIn: number): number {
  f32b[0] = xIn;
  const bits = u32b[0];
  let e = f((bits >>> 23) - 127 + 1);
  u32b[0] = ((bits & ~0x7f800000) | 0x3f000000) >>> 0; // mantissa scaled into [0.5, 1)
  let x = f32b[0];
  let tmp = 0;
  if (x < SQRTHF) {
    e = f(e - 1);
    tmp = x;
  }
  x = f(x - 1);
  x = f(x + tmp);
  const z = f(x * x);
  let y = LOG_P[0];
  for (let k = 1; k < LOG_P.length; k++) y = fmaf(y, x, LOG_P[k]);
  y = f(y * x);
  y = fmaf(y, z, f(e * LOG_Q1));
  y = f(y - f(z * 0.5));
  x = f(x + y);
  return fmaf(e, LOG_Q2, x);
}

const FOPI = f(1.27323954473516);
const DP1 = f(-0.78515625);
const DP2 = f(-2.4187564849853515625e-4);
const DP3 = f(-3.77489497744594108e-8);
const SIN_P0 = f(-1.9515295891e-4);
const SIN_P1 = f(8.3321608736e-3);
const SIN_P2 = f(-1.6666654611e-1);
const COS_P0 = f(2.443315711809948e-5);
const COS_P1 = f(-1.388731625493765e-3);
const COS_P2 = f(4.166664568298827e-2);
const sincosOut = [0, 0];

/** avx_mathfun sincos256_ps for one lane; writes [sin, cos] into sincosOut. */
function sincosAvx(xIn: number): void {
  let negSin = xIn < 0;
  let x = Math.abs(xIn);
  let j = Math.trunc(f(x * FOPI)) | 0;
  j = (j + 1) & ~1; // round to even octant
  const y = f(j);
  if (j & 4) negSin = !negSin;
  const swap = (j & 2) !== 0; // the cosine polynomial serves the sine (and vice versa)
  const negCos = ((j - 2) & 4) === 0;
  x = fmaf(y, DP1, x); // extended-precision reduction x - j*pi/4
  x = fmaf(y, DP2, x);
  x = fmaf(y, DP3, x);
  const z = f(x * x);
  let yc = fmaf(COS_P0, z, COS_P1);
  yc = fmaf(yc, z, COS_P2);
  yc = f(yc * z);
  yc = fmaf(yc, z, -f(z * 0.5));
  yc = f(yc + 1);
  let ys = fmaf(SIN_P0, z, SIN_P1);
  ys = fmaf(ys, z, SIN_P2);
  ys = f(ys * z);
  ys = fmaf(ys, x, x);
  const s = swap ? yc : ys;
  const c = swap ? ys : yc;
  sincosOut[0] = negSin ? -s : s;
  sincosOut[1] = negCos ? -c : c;
}

function boxMuller16Avx2(d: Float32Array, o: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f(1 - d[o + j]);
    const u2 = d[o + j + 8];
    const radius = f(Math.sqrt(f(-2 * logAvx(u1))));
    sincosAvx(f(TWO_PI_F * u2));
    d[o + j] = f(radius * sincosOut[1]);
    d[o + j + 8] = f(radius * sincosOut[0]);
  }
}

/**
 * torch.randn(shape, generator=gen) as a float32 tfjs tensor. With a list of generators (one per batch row), what
 * diffusers' randn_tensor does: row i = torch.randn([1, ...shape[1:]], generator=gens[i]), concatenated.
 */
export function randnTensor(shape: number[], gen: TorchGenerator | TorchGenerator[]): tf.Tensor {
  if (!Array.isArray(gen)) return tf.tensor(gen.randn(shape), shape, 'float32');
  if (shape.length === 0 || gen.length !== shape[0]) {
    throw new Error(`randnTensor: ${gen.length} generators given for a batch of ${shape[0] ?? 'none'} (shape [${shape}]); pass one per row`);
  }
  const row = [1, ...shape.slice(1)];
  const rowSize = row.reduce((a, b) => a * b, 1);
  const out = new Float32Array(rowSize * shape[0]);
  gen.forEach((g, i) => out.set(g.randn(row), i * rowSize));
  return tf.tensor(out, shape, 'float32');
}

/** torch.rand(shape, generator=gen) as a float32 tfjs tensor. */
export function randTensor(shape: number[], gen: TorchGenerator): tf.Tensor {
  return tf.tensor(gen.rand(shape), shape, 'float32');
}
