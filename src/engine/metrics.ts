/** Engine statistics with vLLM's meanings; the server renders them as Prometheus text. */

export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: readonly number[]) {
    this.counts = new Array(buckets.length).fill(0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) { this.counts[i]!++; break; }
  }
}

const SECONDS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
const TOKENS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];

export class EngineMetrics {
  promptTokens = 0;
  generationTokens = 0;
  readonly requestSuccess = new Map<string, number>();
  readonly timeToFirstToken = new Histogram(SECONDS);
  readonly interTokenLatency = new Histogram(SECONDS);
  readonly e2eRequestLatency = new Histogram(SECONDS);
  readonly queueTime = new Histogram(SECONDS);
  readonly requestPromptTokens = new Histogram(TOKENS);
  readonly requestGenerationTokens = new Histogram(TOKENS);
  readonly iterationTokens = new Histogram([1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]);
  numSteps = 0;
  /** Speculative decoding (vLLM's spec_decode_* counters): verified drafts, their tokens, the confirmed ones, per position. */
  specDrafts = 0;
  specDraftTokens = 0;
  readonly specAcceptedPerPosition: number[] = [];

  /** Draft tokens confirmed, all positions together. */
  get specAcceptedTokens(): number {
    return this.specAcceptedPerPosition.reduce((a, n) => a + n, 0);
  }

  /** One sequence's drafts of a step: `drafts` tokens, the first `confirmed` of them confirmed. */
  recordDrafts(drafts: number, confirmed: number): void {
    this.specDrafts++;
    this.specDraftTokens += drafts;
    for (let j = 0; j < drafts; j++) this.specAcceptedPerPosition[j] = (this.specAcceptedPerPosition[j] ?? 0) + (j < confirmed ? 1 : 0);
  }

  recordFinished(reason: string, promptTokens: number, generationTokens: number, e2eSeconds: number): void {
    this.requestSuccess.set(reason, (this.requestSuccess.get(reason) ?? 0) + 1);
    this.requestPromptTokens.observe(promptTokens);
    this.requestGenerationTokens.observe(generationTokens);
    this.e2eRequestLatency.observe(e2eSeconds);
  }
}
