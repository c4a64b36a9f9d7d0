/** Element types a checkpoint may hold, and conversions between them and f32. */

export type DType = "F32" | "F16" | "BF16" | QuantizedDType | "I32" | "I64";
/**
 * 8-bit types of quantized checkpoints, read only together with their scales (src/loader/quantization.ts): FP8 and
 * INT8 weights, and U8 bytes (MXFP4's packed 4-bit blocks and their power-of-two scales).
 */
export type QuantizedDType = "F8_E4M3" | "F8_E5M2" | "I8" | "U8";

/**
 * I32: 4-bit (or 2- or 8-bit) integers packed into 32-bit words (GPTQ, AWQ, compressed-tensors' pack-quantized) and
 * GPTQ's g_idx; I64: compressed-tensors' weight_shape. Read only as parts of their packed weight (src/loader/packed-weights.ts).
 */
export const DTYPE_BYTES: Record<DType, number> = { F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, I8: 1, U8: 1, I32: 4, I64: 8 };

export function isSupportedDType(s: string): s is DType {
  return s in DTYPE_BYTES;
}

export function isQuantizedDType(d: DType): d is QuantizedDType {
  return d === "F8_E4M3" || d === "F8_E5M2" || d === "I8" || d === "U8";
}

const byteTables = new Map<QuantizedDType, Float32Array>();

/** Every byte's value as `dtype` (OCP FP8: E4M3 "fn", no infinities, max 448; E5M2 IEEE-like; I8 two's complement; U8 unsigned). */
function byteTable(dtype: QuantizedDType): Float32Array {
  let t = byteTables.get(dtype);
  if (t) return t;
  t = new Float32Array(256);
  for (let b = 0; b < 256; b++) {
    const sign = b & 0x80 ? -1 : 1;
    if (dtype === "I8") t[b] = b < 128 ? b : b - 256;
    else if (dtype === "U8") t[b] = b;
    else if (dtype === "F8_E4M3") {
      const e = (b >> 3) & 15, m = b & 7;
      t[b] = e === 15 && m === 7 ? NaN : e === 0 ? sign * (m / 8) * 2 ** -6 : sign * (1 + m / 8) * 2 ** (e - 7);
    } else {
      const e = (b >> 2) & 31, m = b & 3;
      t[b] = e === 31 ? (m ? NaN : sign * Infinity) : e === 0 ? sign * (m / 4) * 2 ** -14 : sign * (1 + m / 4) * 2 ** (e - 15);
    }
  }
  byteTables.set(dtype, t);
  return t;
}

/** f32 → the nearest `dtype` byte (ties to the even pattern; E4M3 and I8 saturate) — for writing test checkpoints. */
function toByte(x: number, dtype: QuantizedDType): number {
  if (dtype === "I8") return Math.max(-128, Math.min(127, Math.round(x))) & 0xff;
  if (dtype === "U8") return Math.max(0, Math.min(255, Math.round(x)));
  const t = byteTable(dtype);
  let best = 0, bestErr = Infinity;
  for (let b = 0; b < 256; b++) {
    const v = t[b]!;
    if (!Number.isFinite(v)) continue;
    const err = Math.abs(v - x);
    if (err < bestErr || (err === bestErr && (b & 1) === 0 && (best & 1) === 1)) { best = b; bestErr = err; }
  }
  return best;
}

/** Names accepted by `--dtype` and `torch_dtype`, mapped to safetensors dtypes. */
export function parseDTypeName(name: string): DType {
  switch (name.toLowerCase()) {
    case "float32": case "f32": case "fp32": return "F32";
    case "float16": case "f16": case "fp16": case "half": return "F16";
    case "bfloat16": case "bf16": return "BF16";
    default: throw new Error(`unknown dtype '${name}' (expected float32, float16 or bfloat16)`);
  }
}

let halfTable: Float32Array | null = null;

/** f16 bit pattern → f32 value for all 65536 patterns (built once). */
function f16Table(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 31) t[h] = mant ? NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  halfTable = t;
  return t;
}

/** Reads `count` little-endian elements of `dtype` from `bytes` (any alignment) into f32. */
export function toFloat32(bytes: Uint8Array, dtype: DType, out?: Float32Array): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const dst = out ?? new Float32Array(n);
  if (isQuantizedDType(dtype)) {
    const table = byteTable(dtype);
    for (let i = 0; i < n; i++) dst[i] = table[bytes[i]!]!;
    return dst;
  }
  if (dtype === "F32") {
    new Uint8Array(dst.buffer, dst.byteOffset, n * 4).set(bytes);
    return dst;
  }
  if (dtype === "I32" || dtype === "I64") {
    const words = integers(bytes, dtype);
    for (let i = 0; i < n; i++) dst[i] = Number(words[i]!);
    return dst;
  }
  const u16 = halfWords(bytes);
  if (dtype === "BF16") {
    const bits = new Uint32Array(dst.buffer, dst.byteOffset, n);
    for (let i = 0; i < n; i++) bits[i] = u16[i]! << 16;
  } else {
    const table = f16Table();
    for (let i = 0; i < n; i++) dst[i] = table[u16[i]!]!;
  }
  return dst;
}

/** Little-endian I32 / I64 elements (copied when `bytes` is not aligned to them). */
export function integers(bytes: Uint8Array, dtype: "I32" | "I64"): Int32Array | BigInt64Array {
  const size = DTYPE_BYTES[dtype], src = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  return dtype === "I32" ? new Int32Array(src.buffer, src.byteOffset, src.byteLength / 4) : new BigInt64Array(src.buffer, src.byteOffset, src.byteLength / 8);
}

function halfWords(bytes: Uint8Array): Uint16Array {
  if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return new Uint16Array(bytes.slice().buffer);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** f32 → bf16 bits, round to nearest even (NaN stays NaN). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f32 → f16 bits, round to nearest even, with subnormals and overflow to infinity. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && m & 1)) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++;
    if (m === 0x400) { m = 0; e++; if (e >= 31) return sign | 0x7c00; }
  }
  return sign | (e << 10) | m;
}

/** Encodes f32 values as `dtype` little-endian bytes. */
export function fromFloat32(values: Float32Array, dtype: DType): Uint8Array {
  if (isQuantizedDType(dtype)) return Uint8Array.from(values, (x) => toByte(x, dtype));
  if (dtype === "F32") return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  if (dtype === "I32") return new Uint8Array(Int32Array.from(values, (x) => Math.round(x)).buffer);
  if (dtype === "I64") return new Uint8Array(BigInt64Array.from(values, (x) => BigInt(Math.round(x))).buffer);
  const out = new Uint16Array(values.length);
  const conv = dtype === "BF16" ? f32ToBf16Bits : f32ToF16Bits;
  for (let i = 0; i < values.length; i++) out[i] = conv(values[i]!);
  return new Uint8Array(out.buffer);
}
