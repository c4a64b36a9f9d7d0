/**
 * A PTX-to-JavaScript translator for the GPU simulator: each `.entry` of a module becomes a JS function
 * that runs one thread until it exits or reaches a point where it must wait for others (bar.sync, or a
 * warp-collective shfl.sync / mma.sync). The simulator (./device.ts) schedules the threads.
 *
 * It covers the PTX that nvcc emits for ptx/src/*.cu and throws on anything else (naming the line), so a
 * kernel change that needs a new instruction fails loudly instead of running wrong. Semantics follow the
 * PTX ISA; f32 arithmetic rounds like the hardware (+, −, ×, ÷ exactly; fma, ex2, lg2, rsqrt within an ulp).
 */

import { f32ToBf16Bits } from "../../src/loader/dtype.ts";

export const WAIT_EXIT = 0, WAIT_BARRIER = 1, WAIT_WARP = 2;

/** One simulated thread: registers as typed arrays (32-bit ints and f32 share storage, so bit moves are free). */
export interface Thread {
  i: Int32Array;
  f: Float32Array;
  d: Float64Array;
  p: Uint8Array;
  pc: number;
  tid: number;
  lane: number;
  /** The warp collective this thread waits at (an index into Kernel.collectives). */
  op: number;
  /** Instructions run, for the runaway-loop guard. */
  n: number;
}

/** What a kernel's code reaches per block: memory accessors, the parameter block, launch geometry. */
export interface BlockContext {
  prm: DataView;
  ctaid0: number; ctaid1: number; ctaid2: number;
  nctaid0: number; nctaid1: number; nctaid2: number;
  ntid: number;
  ldg8(a: number): number; ldg16(a: number): number; ldg32(a: number): number; ldg64(a: number): number;
  stg16(a: number, v: number): void; stg32(a: number, v: number): void; stg64(a: number, v: number): void;
  lds16(a: number): number; lds32(a: number): number;
  sts16(a: number, v: number): void; sts32(a: number, v: number): void;
  misaligned(a: number, bytes: number, space: string): never;
}

export type Collective = (lanes: (Thread | null)[], name: string) => void;

export interface KernelParam { name: string; type: string; size: number; offset: number }

export interface Kernel {
  name: string;
  params: KernelParam[];
  paramBytes: number;
  /** Static shared memory: symbol → byte offset, and the total. */
  sharedOffsets: Map<string, number>;
  sharedBytes: number;
  regs: { n32: number; n64: number; npred: number };
  run: (T: Thread, C: BlockContext) => number;
  collectives: Collective[];
  /** Generated JS, for debugging the translator. */
  source: string;
}

const PARAM_SIZE: Record<string, number> = { u64: 8, s64: 8, b64: 8, u32: 4, s32: 4, b32: 4, f32: 4, f64: 8 };
const RUNAWAY = 50_000_000;

function f32Bits(hex: string): number {
  return Number.parseInt(hex, 16) | 0;
}
function bitsToF32(bits: number): number {
  const b = new Int32Array([bits]);
  return new Float32Array(b.buffer)[0]!;
}

function mulhiU32(a: number, b: number): number {
  return Number((BigInt(a >>> 0) * BigInt(b >>> 0)) >> 32n) | 0;
}
function fmax(a: number, b: number): number {
  if (a !== a) return b;
  if (b !== b) return a;
  return a > b ? a : b;
}
function fmin(a: number, b: number): number {
  if (a !== a) return b;
  if (b !== b) return a;
  return a < b ? a : b;
}
/** cvt.rzi.s32.f32 / cvt.rni: saturating; NaN → 0. */
function f2i(x: number, mode: "rzi" | "rni" | "rmi" | "rpi"): number {
  if (x !== x) return 0;
  let r = mode === "rzi" ? Math.trunc(x) : mode === "rmi" ? Math.floor(x) : mode === "rpi" ? Math.ceil(x) : roundEven(x);
  if (r > 2147483647) r = 2147483647;
  if (r < -2147483648) r = -2147483648;
  return r | 0;
}
function roundEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
/** An IEEE half's value (the low 16 bits of `h`): exact in f32. */
function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1024 + m) * 2 ** (e - 25);
}
const HELPERS = { mulhiU32, fmax, fmin, f2i, roundEven, f32ToBf16: f32ToBf16Bits, f16ToF32 };

interface Operand {
  kind: "reg" | "imm" | "vec" | "mem" | "sym" | "special" | "label";
  text: string;
}

class TranslateError extends Error {}

/** Parses every `.entry` of a PTX module. */
export function translateModule(ptx: string): Map<string, Kernel> {
  const kernels = new Map<string, Kernel>();
  const lines = ptx.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const m = /^\s*\.visible\s+\.entry\s+(\w+)\(/.exec(lines[i]!);
    if (!m) continue;
    const name = m[1]!;
    const params: KernelParam[] = [];
    let j = i + 1, offset = 0;
    for (; !lines[j]!.trim().startsWith(")"); j++) {
      const pm = /\.param\s+\.(\w+)\s+(\w+)/.exec(lines[j]!);
      if (!pm) throw new TranslateError(`${name}: cannot read parameter line '${lines[j]!.trim()}'`);
      const size = PARAM_SIZE[pm[1]!];
      if (!size) throw new TranslateError(`${name}: parameter type .${pm[1]} not supported`);
      offset = Math.ceil(offset / size) * size;
      params.push({ name: pm[2]!, type: pm[1]!, size, offset });
      offset += size;
    }
    // Body: from the '{' after ')' to its matching '}' at column 0.
    while (lines[j]!.trim() !== "{") j++;
    const body: { text: string; line: number }[] = [];
    for (j++; lines[j] !== "}"; j++) body.push({ text: lines[j]!, line: j + 1 });
    kernels.set(name, translateKernel(name, params, offset, body));
    i = j;
  }
  return kernels;
}

function splitOperands(s: string): string[] {
  const out: string[] = [];
  let depth = 0, cur = "";
  for (const ch of s) {
    if (ch === "{" || ch === "[") depth++;
    if (ch === "}" || ch === "]") depth--;
    if (ch === "," && depth === 0) { out.push(cur.trim()); cur = ""; } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

function translateKernel(name: string, params: KernelParam[], paramBytes: number, body: { text: string; line: number }[]): Kernel {
  // Register files: each prefix gets a range in its class.
  const slot32 = new Map<string, number>(), slot64 = new Map<string, number>(), slotP = new Map<string, number>();
  const prefix32 = new Map<string, { base: number; count: number }>(), prefix64 = new Map<string, { base: number; count: number }>(), prefixP = new Map<string, { base: number; count: number }>();
  let n32 = 0, n64 = 0, npred = 0;
  const sharedOffsets = new Map<string, number>();
  let sharedBytes = 0;
  const paramOffsets = new Map(params.map((p) => [p.name, p]));

  type Instr = { pred: string | null; neg: boolean; op: string; args: string[]; line: number; text: string };
  const instrs: (Instr | { label: string })[] = [];
  for (const { text: raw, line } of body) {
    let t = raw.replace(/\/\/.*$/, "").trim();
    if (!t) continue;
    if (t.startsWith("{") && t.endsWith("}")) t = t.slice(1, -1).trim();
    if (!t) continue;
    let m: RegExpExecArray | null;
    if ((m = /^\.reg\s+\.(\w+)\s+%(\w+)<(\d+)>;$/.exec(t))) {
      const [, type, prefix, count] = m as unknown as [string, string, string, string];
      const n = Number(count);
      if (type === "pred") { prefixP.set(prefix, { base: npred, count: n }); npred += n; }
      else if (type === "b64" || type === "u64" || type === "s64") { prefix64.set(prefix, { base: n64, count: n }); n64 += n; }
      else if (type === "f32" || type === "b32" || type === "u32" || type === "s32" || type === "b16" || type === "u16" || type === "s16") { prefix32.set(prefix, { base: n32, count: n }); n32 += n; }
      else throw new TranslateError(`${name} line ${line}: register type .${type} not supported`);
      continue;
    }
    if ((m = /^\.shared\s+\.align\s+(\d+)\s+\.b8\s+(\w+)\[(\d+)\];$/.exec(t))) {
      const align = Number(m[1]);
      sharedBytes = Math.ceil(sharedBytes / align) * align;
      sharedOffsets.set(m[2]!, sharedBytes);
      sharedBytes += Number(m[3]);
      continue;
    }
    if (t.startsWith(".pragma")) continue;
    if (t.startsWith(".")) throw new TranslateError(`${name} line ${line}: directive not supported: ${t}`);
    if ((m = /^(\$?\w+):$/.exec(t))) { instrs.push({ label: m[1]! }); continue; }
    if (!t.endsWith(";")) throw new TranslateError(`${name} line ${line}: cannot read '${t}'`);
    t = t.slice(0, -1).trim();
    let pred: string | null = null, neg = false;
    if ((m = /^@(!?)%(\w+)\s+(.*)$/.exec(t))) { neg = m[1] === "!"; pred = m[2]!; t = m[3]!; }
    const sp = t.search(/\s/);
    const op = sp < 0 ? t : t.slice(0, sp);
    const args = sp < 0 ? [] : splitOperands(t.slice(sp + 1));
    instrs.push({ pred, neg, op, args, line, text: t });
  }
  for (const [prefix, r] of prefix32) for (let k = 0; k < r.count; k++) slot32.set(`${prefix}${k}`, r.base + k);
  for (const [prefix, r] of prefix64) for (let k = 0; k < r.count; k++) slot64.set(`${prefix}${k}`, r.base + k);
  for (const [prefix, r] of prefixP) for (let k = 0; k < r.count; k++) slotP.set(`${prefix}${k}`, r.base + k);

  // Case numbers: one per label, and one after each instruction that waits.
  const labelCase = new Map<string, number>();
  let cases = 1;
  for (const ins of instrs) if ("label" in ins) labelCase.set(ins.label, cases++);

  const collectives: Collective[] = [];
  const out: string[] = [];
  const where = (ins: Instr) => `${name} line ${ins.line} ('${ins.text}')`;
  const regName = (a: string) => (a.startsWith("%") ? a.slice(1) : a);
  const is32 = (a: string) => a.startsWith("%") && slot32.has(regName(a));
  const is64 = (a: string) => a.startsWith("%") && slot64.has(regName(a));

  /** A 32-bit value as int32 bits (registers of any 32-bit class, immediates, specials, shared symbols). */
  const bits32 = (a: string, ins: Instr): string => {
    if (is32(a)) return `I[${slot32.get(regName(a))}]`;
    if (/^0[fF][0-9a-fA-F]{8}$/.test(a)) return `${f32Bits(a.slice(2))}`;
    if (/^-?\d+$/.test(a)) return `${Number(a) | 0}`;
    if (/^0x[0-9a-fA-F]+$/i.test(a)) return `${Number(a) | 0}`;
    const special: Record<string, string> = { "%tid.x": "T.tid", "%ntid.x": "C.ntid", "%ctaid.x": "C.ctaid0", "%ctaid.y": "C.ctaid1", "%ctaid.z": "C.ctaid2",
      "%nctaid.x": "C.nctaid0", "%nctaid.y": "C.nctaid1", "%nctaid.z": "C.nctaid2", "%laneid": "T.lane", "%tid.y": "0", "%tid.z": "0", "%ntid.y": "1", "%ntid.z": "1" };
    if (special[a]) return special[a]!;
    if (sharedOffsets.has(a)) return `${sharedOffsets.get(a)}`;
    throw new TranslateError(`${where(ins)}: unsupported 32-bit operand ${a}`);
  };
  const f32v = (a: string, ins: Instr): string => {
    if (is32(a)) return `F[${slot32.get(regName(a))}]`;
    if (/^0[fF][0-9a-fA-F]{8}$/.test(a)) {
      const v = bitsToF32(f32Bits(a.slice(2)));
      return Number.isNaN(v) ? "NaN" : v === Infinity ? "Infinity" : v === -Infinity ? "-Infinity" : Object.is(v, -0) ? "-0" : `${v}`;
    }
    throw new TranslateError(`${where(ins)}: unsupported f32 operand ${a}`);
  };
  const v64 = (a: string, ins: Instr): string => {
    if (is64(a)) return `D[${slot64.get(regName(a))}]`;
    if (/^-?\d+$/.test(a)) return `${Number(a)}`;
    if (sharedOffsets.has(a)) return `${sharedOffsets.get(a)}`;
    throw new TranslateError(`${where(ins)}: unsupported 64-bit operand ${a}`);
  };
  const predv = (a: string, ins: Instr): string => {
    if (a.startsWith("%") && slotP.has(regName(a))) return `P[${slotP.get(regName(a))}]`;
    if (/^-?\d+$/.test(a)) return Number(a) !== 0 ? "1" : "0";
    throw new TranslateError(`${where(ins)}: unsupported predicate ${a}`);
  };
  const dst32 = (a: string, ins: Instr) => { if (!is32(a)) throw new TranslateError(`${where(ins)}: destination ${a} is not a 32-bit register`); return `I[${slot32.get(regName(a))}]`; };
  const dstF = (a: string, ins: Instr) => { if (!is32(a)) throw new TranslateError(`${where(ins)}: destination ${a} is not a 32-bit register`); return `F[${slot32.get(regName(a))}]`; };
  const dst64 = (a: string, ins: Instr) => { if (!is64(a)) throw new TranslateError(`${where(ins)}: destination ${a} is not a 64-bit register`); return `D[${slot64.get(regName(a))}]`; };
  const dstP = (a: string, ins: Instr) => { if (!slotP.has(regName(a))) throw new TranslateError(`${where(ins)}: destination ${a} is not a predicate`); return `P[${slotP.get(regName(a))}]`; };

  /** [reg], [reg+imm], [sym], [sym+imm] → an address expression (a JS number). */
  const address = (a: string, ins: Instr): string => {
    const m = /^\[([%\w$.]+)(?:\+(-?\d+))?\]$/.exec(a.replace(/\s+/g, ""));
    if (!m) throw new TranslateError(`${where(ins)}: cannot read address ${a}`);
    const base = m[1]!, off = m[2] ? Number(m[2]) : 0;
    let b: string;
    if (is64(base)) b = `D[${slot64.get(regName(base))}]`;
    else if (is32(base)) b = `(I[${slot32.get(regName(base))}]>>>0)`;
    else if (sharedOffsets.has(base)) b = `${sharedOffsets.get(base)}`;
    else throw new TranslateError(`${where(ins)}: address base ${base} not supported`);
    return off ? `(${b}+${off})` : b;
  };
  const vecRegs = (a: string): string[] => a.replace(/[{}\s]/g, "").split(",");

  /** Typed read of a source operand. */
  const src = (a: string, type: string, ins: Instr): string => {
    if (type === "f32") return f32v(a, ins);
    if (type === "pred") return predv(a, ins);
    if (/^[usb]64$/.test(type)) return v64(a, ins);
    if (type === "u32" || type === "b32") return `(${bits32(a, ins)}>>>0)`;
    if (type === "s32") return bits32(a, ins);
    if (type === "u16" || type === "b16") return `(${bits32(a, ins)}&65535)`;
    if (type === "s16") return `(${bits32(a, ins)}<<16>>16)`;
    throw new TranslateError(`${where(ins)}: type .${type} not supported`);
  };
  /** Typed write of a JS value to a destination register. */
  const dst = (a: string, type: string, value: string, ins: Instr): string => {
    if (type === "f32") return `${dstF(a, ins)}=${value};`;
    if (type === "pred") return `${dstP(a, ins)}=(${value})?1:0;`;
    if (/^[usb]64$/.test(type)) return `${dst64(a, ins)}=${value};`;
    if (/^[usb]32$/.test(type)) return `${dst32(a, ins)}=(${value})|0;`;
    if (/^[usb]16$/.test(type)) return `${dst32(a, ins)}=(${value})&65535;`;
    throw new TranslateError(`${where(ins)}: type .${type} not supported`);
  };

  const cmp = (c: string, a: string, b: string, float: boolean): string => {
    const ordered: Record<string, string> = { eq: "===", ne: "!==", lt: "<", le: "<=", gt: ">", ge: ">=" };
    if (ordered[c]) return float && c === "ne" ? `(${a}!==${b}&&${a}===${a}&&${b}===${b})` : `(${a}${ordered[c]}${b})`;
    const u = /^(eq|ne|lt|le|gt|ge)u$/.exec(c);
    if (u && float) return `(${a}!==${a}||${b}!==${b}||${a}${ordered[u[1]!]}${b})`;
    if (c === "num") return `(${a}===${a}&&${b}===${b})`;
    if (c === "nan") return `(${a}!==${a}||${b}!==${b})`;
    throw new Error(`comparison .${c}`);
  };

  const waitPoint = (kind: number, extra = "") => {
    const next = cases++;
    return `${extra}T.pc=${next};return ${kind};\ncase ${next}:`;
  };

  for (const ins of instrs) {
    if ("label" in ins) { out.push(`case ${labelCase.get(ins.label)}:`); continue; }
    const parts = ins.op.split(".");
    const base = parts[0]!;
    const type = parts[parts.length - 1]!;
    const a = ins.args;
    let code = "";
    try {
      switch (base) {
        case "mov": {
          if (type === "pred") { code = dst(a[0]!, "pred", predv(a[1]!, ins), ins); break; }
          if (/64$/.test(type)) { code = dst(a[0]!, "u64", v64(a[1]!, ins), ins); break; }
          if (a[0]!.startsWith("{")) {
            const [lo, hi] = vecRegs(a[0]!);
            const s = bits32(a[1]!, ins);
            code = `${dst32(lo!, ins)}=${s}&65535;${dst32(hi!, ins)}=(${s}>>>16)&65535;`;
          } else if (a[1]!.startsWith("{")) {
            const [lo, hi] = vecRegs(a[1]!);
            code = `${dst32(a[0]!, ins)}=((${bits32(lo!, ins)}&65535)|(${bits32(hi!, ins)}<<16))|0;`;
          } else if (/16$/.test(type)) code = `${dst32(a[0]!, ins)}=${bits32(a[1]!, ins)}&65535;`;
          else code = `${dst32(a[0]!, ins)}=${bits32(a[1]!, ins)};`;
          break;
        }
        case "ld": case "st": {
          const space = parts[1]!;
          const vec = parts.find((p) => /^v[24]$/.test(p));
          const width = Number(/\d+$/.exec(type)![0]);
          const isLoad = base === "ld";
          if (space === "param") {
            const pm = /^\[(\w+)(?:\+(\d+))?\]$/.exec(a[1]!);
            const p = pm && paramOffsets.get(pm[1]!);
            if (!p || !isLoad) throw new TranslateError(`${where(ins)}: parameter access not supported`);
            const off = p.offset + (pm![2] ? Number(pm![2]) : 0);
            if (width === 64) code = `${dst64(a[0]!, ins)}=Number(C.prm.getBigUint64(${off},true));`;
            // A 32-bit parameter loaded into a 64-bit register: sign- (.s32) or zero-extended (.u32).
            else if (is64(a[0]!)) code = `${dst64(a[0]!, ins)}=C.prm.get${type === "s32" ? "Int32" : "Uint32"}(${off},true);`;
            else code = `${dst32(a[0]!, ins)}=C.prm.getInt32(${off},true);`;
            break;
          }
          const sp = space === "global" ? "g" : space === "shared" ? "s" : null;
          if (!sp) throw new TranslateError(`${where(ins)}: state space .${space} not supported`);
          const addr = address(isLoad ? a[1]! : a[0]!, ins);
          const regs = vec ? vecRegs(isLoad ? a[0]! : a[1]!) : [isLoad ? a[0]! : a[1]!];
          const bytes = width / 8;
          const lines: string[] = [`{const A=${addr};`];
          // A vector access must be aligned to its whole size (ld.v4.u32: 16 bytes), not just to one element.
          if (regs.length > 1) lines.push(`if(A%${bytes * regs.length}!==0)C.misaligned(A,${bytes * regs.length},"${space}");`);
          regs.forEach((r, k) => {
            const at = k ? `A+${k * bytes}` : "A";
            if (isLoad) {
              if (width === 64) lines.push(`${dst64(r, ins)}=C.ld${sp}64(${at});`);
              else if (is64(r)) lines.push(`${dst64(r, ins)}=C.ld${sp}${width}(${at})${type.startsWith("u") && width === 32 ? ">>>0" : type === "s16" ? "<<16>>16" : ""};`);
              else if (width === 8) lines.push(`${dst32(r, ins)}=C.ld${sp}8(${at});`);
              else if (width === 16) lines.push(`${dst32(r, ins)}=C.ld${sp}16(${at})${type === "s16" ? "<<16>>16" : ""};`);
              else lines.push(`${dst32(r, ins)}=C.ld${sp}32(${at});`);
            } else {
              if (width === 64) lines.push(`C.st${sp}64(${at},${v64(r, ins)});`);
              else if (width === 16) lines.push(`C.st${sp}16(${at},${bits32(r, ins)});`);
              else lines.push(`C.st${sp}32(${at},${bits32(r, ins)});`);
            }
          });
          code = lines.join("") + "}";
          break;
        }
        case "cvta": {
          if (parts[1] !== "to" || parts[2] !== "global") throw new TranslateError(`${where(ins)}: only cvta.to.global is supported`);
          code = dst(a[0]!, "u64", v64(a[1]!, ins), ins);
          break;
        }
        case "add": case "sub": case "mul": case "mad": case "fma": case "div": case "rem": case "min": case "max": {
          const t = type;
          if (t === "f32") {
            const x = f32v(a[1]!, ins), y = f32v(a[2]!, ins);
            const e = base === "add" ? `${x}+${y}` : base === "sub" ? `${x}-${y}` : base === "mul" ? `${x}*${y}` : base === "div" ? `${x}/${y}`
              : base === "fma" || base === "mad" ? `${x}*${y}+${f32v(a[3]!, ins)}` : base === "min" ? `H.fmin(${x},${y})` : base === "max" ? `H.fmax(${x},${y})` : null;
            if (!e) throw new TranslateError(`${where(ins)}: not supported`);
            code = `${dstF(a[0]!, ins)}=${e};`;
            break;
          }
          const wide = parts.includes("wide"), hi = parts.includes("hi");
          if (/64$/.test(t)) {
            const x = v64(a[1]!, ins), y = v64(a[2]!, ins);
            const e = base === "add" ? `${x}+${y}` : base === "sub" ? `${x}-${y}` : base === "mul" ? `${x}*${y}` : base === "min" ? `Math.min(${x},${y})` : base === "max" ? `Math.max(${x},${y})`
              : base === "mad" ? `${x}*${y}+${v64(a[3]!, ins)}` : base === "div" ? `Math.trunc(${x}/${y})` : base === "rem" ? `${x}%${y}` : null;
            if (!e) throw new TranslateError(`${where(ins)}: not supported`);
            code = `${dst64(a[0]!, ins)}=${e};`;
            break;
          }
          const unsigned = t.startsWith("u");
          const x = src(a[1]!, t, ins), y = src(a[2]!, t, ins);
          if (wide) { code = `${dst64(a[0]!, ins)}=${x}*${y};`; break; }
          if (hi) {
            if (!unsigned) throw new TranslateError(`${where(ins)}: mul.hi.s32 not supported`);
            code = `${dst32(a[0]!, ins)}=H.mulhiU32(${x},${y});`;
            break;
          }
          const e = base === "add" ? `${x}+${y}` : base === "sub" ? `${x}-${y}` : base === "mul" ? `Math.imul(${x},${y})` : base === "mad" ? `Math.imul(${x},${y})+${src(a[3]!, t, ins)}`
            : base === "div" ? `${y}===0?-1:Math.trunc(${x}/${y})` : base === "rem" ? `${y}===0?${x}:${x}%${y}` : base === "min" ? `Math.min(${x},${y})` : `Math.max(${x},${y})`;
          code = `${dst32(a[0]!, ins)}=(${e})|0;`;
          break;
        }
        case "neg": case "abs": {
          if (type === "f32") code = `${dstF(a[0]!, ins)}=${base === "neg" ? `-${f32v(a[1]!, ins)}` : `Math.abs(${f32v(a[1]!, ins)})`};`;
          else code = `${dst32(a[0]!, ins)}=(${base === "neg" ? `-${bits32(a[1]!, ins)}` : `Math.abs(${bits32(a[1]!, ins)})`})|0;`;
          break;
        }
        case "ex2": case "lg2": case "rsqrt": case "rcp": case "sqrt": case "sin": case "cos": {
          if (type !== "f32") throw new TranslateError(`${where(ins)}: not supported`);
          const x = f32v(a[1]!, ins);
          const e = { ex2: `Math.pow(2,${x})`, lg2: `Math.log2(${x})`, rsqrt: `1/Math.sqrt(${x})`, rcp: `1/${x}`, sqrt: `Math.sqrt(${x})`, sin: `Math.sin(${x})`, cos: `Math.cos(${x})` }[base];
          code = `${dstF(a[0]!, ins)}=${e};`;
          break;
        }
        case "setp": {
          const c = parts[1]!;
          const float = type === "f32";
          const x = src(a[1]!, type, ins), y = src(a[2]!, type, ins);
          if (a[0]!.includes("|")) throw new TranslateError(`${where(ins)}: setp with two destinations not supported`);
          code = `${dstP(a[0]!, ins)}=${cmp(c, x, y, float)}?1:0;`;
          break;
        }
        case "selp": {
          const p = predv(a[3]!, ins);
          code = dst(a[0]!, type === "f32" ? "f32" : type, `${p}?${src(a[1]!, type, ins)}:${src(a[2]!, type, ins)}`, ins);
          break;
        }
        case "and": case "or": case "xor": case "not": {
          if (type === "pred") {
            const x = predv(a[1]!, ins);
            code = `${dstP(a[0]!, ins)}=${base === "not" ? `1-${x}` : `${x}${base === "and" ? "&" : base === "or" ? "|" : "^"}${predv(a[2]!, ins)}`};`;
          } else if (type === "b64") {
            const x = `BigInt(${v64(a[1]!, ins)})`;
            const e = base === "not" ? `~${x}` : `${x}${base === "and" ? "&" : base === "or" ? "|" : "^"}BigInt(${v64(a[2]!, ins)})`;
            code = `${dst64(a[0]!, ins)}=Number(BigInt.asIntN(64,${e}));`;
          } else if (type === "b32") {
            const x = bits32(a[1]!, ins);
            code = `${dst32(a[0]!, ins)}=${base === "not" ? `~${x}` : `${x}${base === "and" ? "&" : base === "or" ? "|" : "^"}${bits32(a[2]!, ins)}`};`;
          } else if (type === "b16") {
            const x = bits32(a[1]!, ins);
            code = `${dst32(a[0]!, ins)}=(${base === "not" ? `~${x}` : `${x}${base === "and" ? "&" : base === "or" ? "|" : "^"}${bits32(a[2]!, ins)}`})&65535;`;
          } else throw new TranslateError(`${where(ins)}: not supported`);
          break;
        }
        case "shl": case "shr": {
          if (/64$/.test(type)) {
            const x = v64(a[1]!, ins), n = src(a[2]!, "u32", ins);
            code = base === "shl" ? `${dst64(a[0]!, ins)}=Number(BigInt.asIntN(64,BigInt(${x})<<BigInt(Math.min(${n},64))));`
              : `${dst64(a[0]!, ins)}=Number(BigInt.as${type === "s64" ? "Int" : "Uint"}N(64,BigInt(${x}))>>BigInt(Math.min(${n},64)));`;
            // Small left shifts of addresses are the hot case: exact in doubles.
            if (base === "shl" && /^\d+$/.test(a[2]!)) code = `${dst64(a[0]!, ins)}=${x}*${2 ** Number(a[2])};`;
            break;
          }
          const x = bits32(a[1]!, ins), n = src(a[2]!, "u32", ins);
          const e = base === "shl" ? `(${n}>31?0:${x}<<${n})` : type === "s32" ? `${x}>>Math.min(${n},31)` : `(${n}>31?0:${x}>>>${n})`;
          code = `${dst32(a[0]!, ins)}=(${e})${type.endsWith("16") ? "&65535" : "|0"};`;
          break;
        }
        case "cvt": {
          const [dt, st] = parts.slice(-2) as [string, string];
          const rnd = parts.find((p) => /^(rn|rz|rm|rp|rzi|rni|rmi|rpi)$/.test(p));
          const d = a[0]!, s = a[1]!;
          if (dt === "bf16x2" && st === "f32") { code = `${dst32(d, ins)}=(H.f32ToBf16(${f32v(a[1]!, ins)})<<16)|H.f32ToBf16(${f32v(a[2]!, ins)});`; break; }
          if (dt === "bf16" && st === "f32") { code = `${dst32(d, ins)}=H.f32ToBf16(${f32v(s, ins)});`; break; }
          if (dt === "f32" && st === "bf16") { code = `${dst32(d, ins)}=${bits32(s, ins)}<<16;`; break; }
          if (dt === "f32" && st === "f16") { code = `${dstF(d, ins)}=H.f16ToF32(${bits32(s, ins)});`; break; }
          if (dt === "f32" && /^[su](32|16|64)$/.test(st)) { code = `${dstF(d, ins)}=${src(s, st, ins)};`; break; }
          if (dt === "f32" && st === "f32") {
            // Rounding to an integer value (rni: to nearest, ties to even), and .sat: clamped to [0, 1], NaN to 0.
            const round = { rni: "H.roundEven", rzi: "Math.trunc", rmi: "Math.floor", rpi: "Math.ceil" }[rnd ?? ""] ?? "";
            const v = `${round}(${f32v(s, ins)})`;
            code = `${dstF(d, ins)}=${parts.includes("sat") ? `((x)=>x!==x?0:Math.min(1,Math.max(0,x)))(${v})` : v};`;
            break;
          }
          if (/^[su]32$/.test(dt) && st === "f32") { code = `${dst32(d, ins)}=H.f2i(${f32v(s, ins)},"${rnd ?? "rzi"}");`; break; }
          if (/^[su]64$/.test(dt) && /^[su](32|16)$/.test(st)) { code = `${dst64(d, ins)}=${src(s, st, ins)};`; break; }
          if (/^[su](32|16)$/.test(dt) && /^[su]64$/.test(st)) { code = dst(d, dt, v64(s, ins), ins); break; }
          if (/^[su](32|16)$/.test(dt) && /^[su](32|16)$/.test(st)) { code = dst(d, dt, src(s, st, ins), ins); break; }
          throw new TranslateError(`${where(ins)}: conversion not supported`);
        }
        case "bra": {
          const target = labelCase.get(a[0]!);
          if (target === undefined) throw new TranslateError(`${where(ins)}: unknown label`);
          code = `if(++T.n>${RUNAWAY})throw new Error("${name}: runaway loop (over ${RUNAWAY} branches in one thread)");pc=${target};continue;`;
          break;
        }
        case "ret": case "exit":
          code = `T.pc=-1;return ${WAIT_EXIT};`;
          break;
        case "bar": case "barrier": {
          if (!(parts[1] === "sync" || parts[1] === undefined) || (a.length !== 1 || a[0] !== "0")) throw new TranslateError(`${where(ins)}: only bar.sync 0 is supported`);
          code = waitPoint(WAIT_BARRIER);
          break;
        }
        case "shfl": {
          if (parts[1] !== "sync" || type !== "b32") throw new TranslateError(`${where(ins)}: not supported`);
          collectives.push(shuffle(parts[2]!, a, ins));
          code = waitPoint(WAIT_WARP, `T.op=${collectives.length - 1};`);
          break;
        }
        case "mma": {
          if (ins.op !== "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") throw new TranslateError(`${where(ins)}: only mma m16n8k16 row.col f32.bf16.bf16.f32 is supported`);
          collectives.push(mma(a, ins));
          code = waitPoint(WAIT_WARP, `T.op=${collectives.length - 1};`);
          break;
        }
        default:
          throw new TranslateError(`${where(ins)}: instruction not supported`);
      }
    } catch (e) {
      if (e instanceof TranslateError) throw e;
      throw new TranslateError(`${where(ins)}: ${(e as Error).message}`);
    }
    if (ins.pred) {
      if (base === "bar" || base === "shfl" || base === "mma") throw new TranslateError(`${where(ins)}: predicated collectives are not supported`);
      const cond = `P[${slotP.get(ins.pred)}]`;
      code = `if(${ins.neg ? "!" : ""}${cond}){${code}}`;
    }
    out.push(code);
  }

  const source = `const I=T.i,F=T.f,D=T.d,P=T.p;let pc=T.pc;for(;;){switch(pc){\ncase 0:\n${out.join("\n")}\nT.pc=-1;return ${WAIT_EXIT};\ndefault:throw new Error("${name}: bad pc "+pc);}}`;
  const fn = new Function("H", `return function ${name}(T,C){${source}}`)(HELPERS) as Kernel["run"];
  return { name, params, paramBytes, sharedOffsets, sharedBytes, regs: { n32, n64, npred }, run: fn, collectives, source };

  // ---- warp collectives ----
  function reader32(x: string, ins: Instr): (t: Thread) => number {
    const e = bits32(x, ins);
    return new Function("T", `const I=T.i;return ${e};`) as (t: Thread) => number;
  }
  function shuffle(mode: string, a: string[], ins: Instr): Collective {
    const [d, pd] = a[0]!.split("|") as [string, string | undefined];
    const dslot = slot32.get(regName(d))!, pslot = pd ? slotP.get(regName(pd))! : -1;
    const val = reader32(a[1]!, ins), bArg = reader32(a[2]!, ins), cArg = reader32(a[3]!, ins), maskArg = reader32(a[4]!, ins);
    if (dslot === undefined) throw new TranslateError(`${where(ins)}: bad destination`);
    const at = where(ins);
    const vals = new Int32Array(32);
    return (lanes) => {
      let present = 0;
      for (let l = 0; l < 32; l++) { const t = lanes[l]; if (t) { vals[l] = val(t); present |= 1 << l; } }
      for (let l = 0; l < 32; l++) {
        const t = lanes[l];
        if (!t) continue;
        const missing = maskArg(t) & ~present;
        if (missing !== 0) throw new Error(`${at}: lane ${31 - Math.clz32(missing & -missing)} is named in the mask but has exited or diverged`);
        const b = bArg(t) & 31, c = cArg(t);
        const cval = c & 31, seg = (c >>> 8) & 31;
        const maxLane = (l & seg) | (cval & ~seg), minLane = l & seg;
        let j: number, ok: boolean;
        if (mode === "up") { j = l - b; ok = j >= maxLane; }
        else if (mode === "down") { j = l + b; ok = j <= maxLane; }
        else if (mode === "bfly") { j = l ^ b; ok = j <= maxLane; }
        else if (mode === "idx") { j = minLane | (b & ~seg); ok = j <= maxLane; }
        else throw new Error(`${at}: shfl mode ${mode}`);
        if (!ok) j = l;
        t.i[dslot] = vals[j]!;
        if (pslot >= 0) t.p[pslot] = ok ? 1 : 0;
      }
    };
  }
  function mma(a: string[], ins: Instr): Collective {
    const at = where(ins);
    const slots = (v: string, n: number) => {
      const r = vecRegs(v).map((x) => slot32.get(regName(x)));
      if (r.length !== n || r.some((x) => x === undefined)) throw new TranslateError(`${at}: bad mma operand ${v}`);
      return r as number[];
    };
    const dS = slots(a[0]!, 4), aS = slots(a[1]!, 4), bS = slots(a[2]!, 2), cS = slots(a[3]!, 4);
    const A = new Float64Array(16 * 16), B = new Float64Array(16 * 8), Cm = new Float64Array(16 * 8);
    const bf = new Float32Array(1), bfBits = new Int32Array(bf.buffer);
    const lo = (x: number) => { bfBits[0] = x << 16; return bf[0]!; };
    const hi = (x: number) => { bfBits[0] = x & ~0xffff; return bf[0]!; };
    return (lanes) => {
      for (let l = 0; l < 32; l++) if (!lanes[l]) throw new Error(`${at}: mma.sync needs all 32 lanes (lane ${l} exited or diverged)`);
      for (let l = 0; l < 32; l++) {
        const t = lanes[l]!, g = l >> 2, q = l & 3;
        const r = [aS[0]!, aS[1]!, aS[2]!, aS[3]!].map((s) => t.i[s]!);
        // A (16×16, row): a0,a1 row g, cols 2q,2q+1 | a2,a3 row g+8 | a4,a5 row g, cols +8 | a6,a7 row g+8, cols +8
        A[g * 16 + 2 * q] = lo(r[0]!); A[g * 16 + 2 * q + 1] = hi(r[0]!);
        A[(g + 8) * 16 + 2 * q] = lo(r[1]!); A[(g + 8) * 16 + 2 * q + 1] = hi(r[1]!);
        A[g * 16 + 2 * q + 8] = lo(r[2]!); A[g * 16 + 2 * q + 9] = hi(r[2]!);
        A[(g + 8) * 16 + 2 * q + 8] = lo(r[3]!); A[(g + 8) * 16 + 2 * q + 9] = hi(r[3]!);
        // B (16×8, col): b0,b1 rows 2q,2q+1 | b2,b3 rows 2q+8,2q+9; column g
        const b0 = t.i[bS[0]!]!, b1 = t.i[bS[1]!]!;
        B[(2 * q) * 8 + g] = lo(b0); B[(2 * q + 1) * 8 + g] = hi(b0);
        B[(2 * q + 8) * 8 + g] = lo(b1); B[(2 * q + 9) * 8 + g] = hi(b1);
        // C (16×8): c0,c1 row g, cols 2q,2q+1 | c2,c3 row g+8
        Cm[g * 8 + 2 * q] = t.f[cS[0]!]!; Cm[g * 8 + 2 * q + 1] = t.f[cS[1]!]!;
        Cm[(g + 8) * 8 + 2 * q] = t.f[cS[2]!]!; Cm[(g + 8) * 8 + 2 * q + 1] = t.f[cS[3]!]!;
      }
      const Dm = new Float32Array(16 * 8);
      for (let r = 0; r < 16; r++) for (let c = 0; c < 8; c++) {
        let s = Cm[r * 8 + c]!;
        for (let k = 0; k < 16; k++) s += A[r * 16 + k]! * B[k * 8 + c]!;
        Dm[r * 8 + c] = s;
      }
      for (let l = 0; l < 32; l++) {
        const t = lanes[l]!, g = l >> 2, q = l & 3;
        t.f[dS[0]!] = Dm[g * 8 + 2 * q]!; t.f[dS[1]!] = Dm[g * 8 + 2 * q + 1]!;
        t.f[dS[2]!] = Dm[(g + 8) * 8 + 2 * q]!; t.f[dS[3]!] = Dm[(g + 8) * 8 + 2 * q + 1]!;
      }
    };
  }
}
