/** Random request arrivals for the scheduler + block manager property tests. */
import { SamplingParams } from "../src/engine/sampling-params.ts";
import type { Scheduler } from "../src/engine/scheduler.ts";
import { Sequence } from "../src/engine/sequence.ts";
import type { SeededRandom } from "../src/model/tiny-model.ts";

export interface ArrivalShape {
  /** Shared prompt prefixes (70 % of prompts start with one), each of prefixLen [lo, hi] tokens. */
  prefixes: number;
  prefixLen: [number, number];
  /** Each prompt's own tokens after its prefix: 1 … suffixLen, ids below vocab. */
  suffixLen: number;
  vocab: number;
  /** max_tokens: 1 … maxOutput, within the model length. */
  maxOutput: number;
  maxModelLen: number;
  /** Arrivals per step: 0 … perStep. */
  perStep: number;
}

/** `total` sequences arriving a few per step; `live` holds those not finished or aborted yet. */
export class RandomArrivals {
  readonly live = new Set<Sequence>();
  readonly maxTokens = new Map<Sequence, number>();
  private readonly prefixes: number[][];
  private next = 0;

  constructor(private readonly rng: SeededRandom, readonly total: number, private readonly s: ArrivalShape) {
    this.prefixes = Array.from({ length: s.prefixes }, () => Array.from({ length: rng.int(s.prefixLen[0], s.prefixLen[1]) }, () => rng.int(0, s.vocab - 1)));
  }

  /** True until every sequence has arrived and left. */
  get pending(): boolean {
    return this.next < this.total || this.live.size > 0;
  }

  /** This step's arrivals, added to the scheduler. */
  arrive(sched: Scheduler): void {
    const { rng, s } = this;
    for (let k = rng.int(0, s.perStep); k > 0 && this.next < this.total; k--) {
      const pre = rng.next() < 0.7 ? this.prefixes[rng.int(0, s.prefixes - 1)]! : [];
      const prompt = [...pre, ...Array.from({ length: rng.int(1, s.suffixLen) }, () => rng.int(0, s.vocab - 1))].slice(0, s.maxModelLen - 8);
      const mt = rng.int(1, Math.min(s.maxOutput, s.maxModelLen - prompt.length));
      const id = this.next++;
      const seq = new Sequence(id, `r${id}`, 0, prompt, new SamplingParams({ max_tokens: mt }), 0, 0);
      this.live.add(seq);
      this.maxTokens.set(seq, mt);
      sched.add(seq);
    }
  }
}
