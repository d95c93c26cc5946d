// Recycled output buffers for the `native` backend.
//
// A fresh buffer costs the kernel a page fault and a kernel-side zero fill per 4 KiB page on first touch: on the
// super-res's 84 MB activations that is 4-5 ms, a third of a 14 ms conv_in, and on the prior's 1.3 MB Linear
// outputs 0.4 ms of a 4.7 ms GEMM. Buffers of tensors that die are therefore kept (up to a byte budget) and handed
// to the next kernel output of the same byte length, which overwrites them entirely.
//
// Recycling is only safe for memory nothing else can still see, so a buffer is recyclable only while:
// - the pool allocated it for a kernel output (arrays users pass to tf.tensor() are never recycled);
// - exactly one tensor refers to it: a second registration of the same memory (tfjs-cpu's Slice returns a
//   subarray of its input) pins it for good;
// - its values were never handed out (dataSync(), data(), bufferSync() return the backend's own array): pinned.
// Pinned buffers are left to the garbage collector as before.
import { constants as bufferConstants } from 'node:buffer';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { BackendValues, DataId, DataType } from '@tensorflow/tfjs-core';

/** Outputs smaller than this are plain `new Float32Array` (the allocator is fast there). */
const MIN_POOLED_ELEMENTS = 16384;

export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  /** Free buffers in release order, for evicting the oldest first. */
  private readonly order: ArrayBuffer[] = [];
  private freeBytes = 0;
  /** Buffers the pool allocated whose memory one live tensor at most can see. */
  private readonly recyclable = new WeakSet<ArrayBuffer>();
  /** Arrays handed out by alloc() and not yet registered to a tensor. */
  private readonly fresh = new WeakSet<Float32Array>();
  hits = 0;
  misses = 0;

  constructor(private budgetBytes: number) {}

  /** A Float32Array of n elements whose contents are undefined: the caller must overwrite all of it. */
  alloc(n: number): Float32Array {
    const bytes = n * 4;
    if (n < MIN_POOLED_ELEMENTS || bytes > bufferConstants.MAX_LENGTH) return new Float32Array(n);
    const list = this.free.get(bytes);
    let buf = list?.pop();
    if (buf) {
      this.hits++;
      this.freeBytes -= bytes;
      this.order.splice(this.order.lastIndexOf(buf), 1);
      if (list!.length === 0) this.free.delete(bytes);
    } else {
      this.misses++;
      // Uninitialised and unpooled: no zero fill, and the ArrayBuffer is exactly this buffer.
      const b = Buffer.allocUnsafeSlow(bytes);
      buf = b.buffer as ArrayBuffer;
      if (b.byteOffset !== 0 || buf.byteLength !== bytes) return new Float32Array(b.buffer, b.byteOffset, n);
    }
    this.recyclable.add(buf);
    const arr = new Float32Array(buf, 0, n);
    this.fresh.add(arr);
    return arr;
  }

  /** Called when values are registered to a tensor: the first registration of a fresh array is its owner. */
  registered(values: unknown): void {
    if (!(values instanceof Float32Array)) return;
    if (this.fresh.has(values)) {
      this.fresh.delete(values);
    } else {
      this.pin(values);
    }
  }

  /** Never recycle this memory (it is, or may be, visible outside its one tensor). */
  pin(values: unknown): void {
    if (ArrayBuffer.isView(values)) this.recyclable.delete(values.buffer as ArrayBuffer);
  }

  /** The tensor owning `values` is gone: keep its memory for the next output of the same size. */
  release(values: unknown): void {
    if (!(values instanceof Float32Array)) return;
    const buf = values.buffer as ArrayBuffer;
    if (!this.recyclable.has(buf) || values.byteOffset !== 0 || values.byteLength !== buf.byteLength) return;
    this.recyclable.delete(buf);
    const bytes = buf.byteLength;
    if (bytes > this.budgetBytes) return;
    while (this.freeBytes + bytes > this.budgetBytes) this.evictOldest();
    const list = this.free.get(bytes);
    if (list) list.push(buf);
    else this.free.set(bytes, [buf]);
    this.order.push(buf);
    this.freeBytes += bytes;
  }

  private evictOldest(): void {
    const buf = this.order.shift()!;
    const list = this.free.get(buf.byteLength)!;
    list.splice(list.indexOf(buf), 1);
    if (list.length === 0) this.free.delete(buf.byteLength);
    this.freeBytes -= buf.byteLength;
  }

  /** Drops every free buffer (they go to the garbage collector); e.g. between pipeline stages. */
  trim(): void {
    this.free.clear();
    this.order.length = 0;
    this.freeBytes = 0;
  }

  setBudget(bytes: number): void {
    this.budgetBytes = bytes;
    while (this.freeBytes > this.budgetBytes) this.evictOldest();
  }

  get bytesFree(): number {
    return this.freeBytes;
  }
}

/**
 * tfjs-backend-cpu's backend with a BufferPool: it tells the pool when values are registered to a tensor, read
 * out, or released, so that kernel outputs are recycled only when provably unseen.
 */
export class PooledCPUBackend extends MathBackendCPU {
  constructor(readonly pool: BufferPool) {
    super();
    // tfjs-backend-cpu's first write prints advice to install tfjs-node, which this backend replaces.
    (this as unknown as { firstUse: boolean }).firstUse = false;
  }

  override write(values: BackendValues, shape: number[], dtype: DataType): DataId {
    this.pool.registered(values);
    return super.write(values, shape, dtype);
  }

  override move(dataId: DataId, values: BackendValues, shape: number[], dtype: DataType, refCount: number): void {
    this.pool.registered(values);
    super.move(dataId, values, shape, dtype, refCount);
  }

  override readSync(dataId: DataId): BackendValues {
    const entry = this.data.get(dataId);
    if (entry) this.pool.pin(entry.values);
    return super.readSync(dataId);
  }

  override disposeData(dataId: DataId, force = false): boolean {
    const entry = this.data.get(dataId);
    const gone = super.disposeData(dataId, force);
    if (entry && gone && !this.data.has(dataId)) this.pool.release(entry.values);
    return gone;
  }
}
