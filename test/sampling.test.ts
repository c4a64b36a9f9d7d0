/**
 * The CPU sampler against vLLM's sampling semantics, computed independently in float64: seeded draws over
 * many seeds never leave the filtered set and follow its probabilities. The GPU kernel meets the same
 * check in test/cuda-suite.ts.
 */
import { expect, test } from "bun:test";
import { CpuBackend, CpuTensor } from "../src/backend/cpu/cpu-backend.ts";
import { emptySamplingBatch } from "../src/engine/sampling-batch.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";
import { checkDraws, filteredDistribution, SAMPLING_CASES } from "./helpers.ts";

for (const c of SAMPLING_CASES) {
  test(`CPU sampling, ${c.name}: 4,000 seeded draws follow the filtered distribution`, () => {
    const V = 64, N = 4000;
    const row = new SeededRandom(31).normal(new Float32Array(V), 2);
    const logits = new Float32Array(N * V);
    for (let r = 0; r < N; r++) logits.set(row, r * V);
    const b = emptySamplingBatch(N);
    for (let r = 0; r < N; r++) { b.temperature[r] = c.temperature; b.topK[r] = c.topK; b.topP[r] = c.topP; b.minP[r] = c.minP; b.seed[r] = 5000 + r; b.stream[r] = 0; b.step[r] = 0; b.numLogprobs[r] = -1; }
    const out = new CpuBackend().sample(new CpuTensor(logits, [N, V]), b);
    expect(checkDraws(out.tokenIds, filteredDistribution(row, c))).toBeNull();
  });
}
