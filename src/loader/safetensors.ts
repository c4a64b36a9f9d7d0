/**
 * safetensors files: 8 bytes of little-endian header length, a JSON header mapping tensor names to
 * {dtype, shape, data_offsets}, then the raw data. Files are mapped with Bun.mmap, never read into the heap.
 */
import { basename } from "node:path";
import { closeSync, existsSync, openSync, writeSync } from "node:fs";
import { DTYPE_BYTES, isSupportedDType, type DType } from "./dtype.ts";

export interface TensorView {
  name: string;
  file: string;
  dtype: DType;
  shape: number[];
  /** The tensor's bytes inside the mapped file (no copy). */
  bytes: Uint8Array;
}

export class SafetensorsError extends Error {
  constructor(file: string, message: string) {
    super(`${basename(file)}: ${message}`);
    this.name = "SafetensorsError";
  }
}

interface HeaderEntry { dtype: DType; shape: number[]; start: number; end: number }

const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  private readonly data: Uint8Array;
  private readonly dataStart: number;
  private readonly entries: Map<string, HeaderEntry>;

  private constructor(path: string, data: Uint8Array, dataStart: number, entries: Map<string, HeaderEntry>, metadata: Record<string, string>) {
    this.path = path;
    this.data = data;
    this.dataStart = dataStart;
    this.entries = entries;
    this.metadata = metadata;
  }

  static open(path: string): SafetensorsFile {
    if (!existsSync(path)) throw new SafetensorsError(path, "file not found");
    let data: Uint8Array;
    try {
      data = Bun.mmap(path, { shared: false });
    } catch (e) {
      throw new SafetensorsError(path, `cannot map file: ${(e as Error).message}`);
    }
    return SafetensorsFile.fromBytes(path, data);
  }

  /** Parses and validates the header of an in-memory (or mapped) safetensors image. */
  static fromBytes(path: string, data: Uint8Array): SafetensorsFile {
    if (data.byteLength < 8) throw new SafetensorsError(path, `truncated: ${data.byteLength} bytes, need at least 8 for the header length`);
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const headerLen = Number(view.getBigUint64(0, true));
    if (headerLen > MAX_HEADER_BYTES) throw new SafetensorsError(path, `bad header: length ${headerLen} is implausibly large`);
    if (8 + headerLen > data.byteLength) throw new SafetensorsError(path, `truncated: header needs ${headerLen} bytes but the file has ${data.byteLength - 8} after the length`);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data.subarray(8, 8 + headerLen)));
    } catch (e) {
      throw new SafetensorsError(path, `bad header: not valid JSON (${(e as Error).message})`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) throw new SafetensorsError(path, "bad header: not a JSON object");
    const dataStart = 8 + headerLen;
    const dataLen = data.byteLength - dataStart;
    const entries = new Map<string, HeaderEntry>();
    let metadata: Record<string, string> = {};
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") { metadata = (raw ?? {}) as Record<string, string>; continue; }
      const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof e !== "object" || e === null) throw new SafetensorsError(path, `tensor '${name}': header entry is not an object`);
      if (typeof e.dtype !== "string") throw new SafetensorsError(path, `tensor '${name}': missing dtype`);
      if (!isSupportedDType(e.dtype)) throw new SafetensorsError(path, `tensor '${name}': unsupported dtype ${e.dtype} (supported: BF16, F16, F32, and F8_E4M3, F8_E5M2, I8 with their scales, U8 as MXFP4 blocks and scales, I32 / I64 as parts of packed 4-bit weights)`);
      if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) throw new SafetensorsError(path, `tensor '${name}': bad shape ${JSON.stringify(e.shape)}`);
      const off = e.data_offsets;
      if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0)) throw new SafetensorsError(path, `tensor '${name}': bad data_offsets ${JSON.stringify(off)}`);
      const [start, end] = off as [number, number];
      if (start > end || end > dataLen) throw new SafetensorsError(path, `tensor '${name}': data_offsets [${start}, ${end}] out of range (data section is ${dataLen} bytes${end > dataLen ? "; file truncated?" : ""})`);
      const numel = (e.shape as number[]).reduce((a, b) => a * b, 1);
      const want = numel * DTYPE_BYTES[e.dtype];
      if (end - start !== want) throw new SafetensorsError(path, `tensor '${name}': data_offsets span ${end - start} bytes but ${e.dtype}${JSON.stringify(e.shape)} needs ${want}`);
      entries.set(name, { dtype: e.dtype, shape: e.shape as number[], start, end });
    }
    return new SafetensorsFile(path, data, dataStart, entries, metadata);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  tensor(name: string): TensorView {
    const e = this.entries.get(name);
    if (!e) throw new SafetensorsError(this.path, `tensor '${name}' not found`);
    return {
      name, file: this.path, dtype: e.dtype, shape: e.shape,
      bytes: this.data.subarray(this.dataStart + e.start, this.dataStart + e.end),
    };
  }
}

export interface TensorToWrite { name: string; dtype: DType; shape: number[]; bytes: Uint8Array }

/** Writes tensors to a safetensors file (header padded to 8 bytes, tensors in the given order). */
export function writeSafetensors(path: string, tensors: TensorToWrite[], metadata: Record<string, string> = { format: "pt" }): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel * DTYPE_BYTES[t.dtype] !== t.bytes.byteLength) throw new Error(`writeSafetensors: tensor '${t.name}' has ${t.bytes.byteLength} bytes, shape needs ${numel * DTYPE_BYTES[t.dtype]}`);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.byteLength] };
    offset += t.bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);
  const fd = openSync(path, "w");
  try {
    writeSync(fd, len);
    writeSync(fd, headerBytes);
    for (const t of tensors) writeSync(fd, t.bytes);
  } finally {
    closeSync(fd);
  }
}
