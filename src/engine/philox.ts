/**
 * Philox4x32-10 counter-based RNG (Salmon et al., 2011). A (key, counter) pair always gives the same four
 * 32-bit words, so a request's random stream depends only on its seed and how many tokens it has sampled,
 * never on which other requests share the batch. The CUDA sampler uses the same function.
 */

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

function mulhi(a: number, b: number): number {
  const al = a & 0xffff, ah = a >>> 16, bl = b & 0xffff, bh = b >>> 16;
  const lolo = al * bl, hilo = ah * bl, lohi = al * bh, hihi = ah * bh;
  const cross = (lolo >>> 16) + (hilo & 0xffff) + lohi;
  return (hihi + (hilo >>> 16) + Math.floor(cross / 65536)) >>> 0;
}

/** Returns the four output words for key (k0, k1) and counter (c0, c1, c2, c3). */
export function philox4x32(k0: number, k1: number, c0: number, c1: number, c2: number, c3: number, out = new Uint32Array(4)): Uint32Array {
  for (let r = 0; r < 10; r++) {
    const hi0 = mulhi(M0, c0), lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi(M1, c2), lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
  return out;
}

const scratch = new Uint32Array(4);

/**
 * A uniform float in [0, 1) with 24 random bits, for the `step`-th sampled token of the stream (seed, stream).
 * `stream` separates the n samples of one request.
 */
export function philoxUniform(seed: number, stream: number, step: number): number {
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 4294967296) >>> 0;
  philox4x32(lo, hi, step >>> 0, stream >>> 0, 0, 0, scratch);
  return (scratch[0]! >>> 8) * (1 / 16777216);
}
