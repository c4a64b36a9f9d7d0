/**
 * The streaming front of the engine for servers. The engine core runs in a Worker (engine-worker.ts), so a
 * model step never blocks HTTP handling; it runs without a tokenizer (token ids in and out). This side
 * validates and tokenizes requests, turns the worker's token ids into text and checks stop strings
 * (OutputProcessor), keeps one async iterator of outputs per request, bounds the waiting queue, and shuts
 * down gracefully.
 */
import { unpackOutputs } from "./output-codec.ts";
import { OutputProcessor } from "./output-processor.ts";
import type { SamplingDefaults } from "./generation-config.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { ENGINE_WORKER_URL, workerOptions } from "../worker-url.ts";
import type { ModelConfig } from "../model/config.ts";
import type { EngineOptions } from "./engine-config.ts";
import type { WorkerIn, WorkerOut } from "./engine-protocol.ts";
import type { EngineStats } from "./engine-stats.ts";
import { checkLoraModule, InvalidRequestError, validateRequest, type EngineInfo, type RequestLimits } from "./llm-engine.ts";
import type { RequestOutput } from "./request.ts";
import type { SamplingParams } from "./sampling-params.ts";

/** The waiting queue is full (maps to HTTP 503). */
export class EngineOverloadedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EngineOverloadedError";
  }
}

/** The engine is shutting down or died (maps to HTTP 503). */
export class EngineUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EngineUnavailableError";
  }
}

class OutputStream implements AsyncIterableIterator<RequestOutput> {
  private readonly items: RequestOutput[] = [];
  private waiter: { resolve: (r: IteratorResult<RequestOutput>) => void; reject: (e: unknown) => void } | null = null;
  private done = false;
  private error: unknown = null;
  /** Whether any output arrived (a request without one is still waiting). */
  started = false;

  /** `onLeaveWaiting` runs once, when the first output arrives or the stream ends without one. */
  constructor(private readonly onLeaveWaiting: () => void = () => {}) {}

  private leaveWaiting(): void {
    if (this.started) return;
    this.started = true;
    this.onLeaveWaiting();
  }

  push(o: RequestOutput): void {
    if (this.done) return;
    this.leaveWaiting();
    if (o.finished) this.done = true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve({ value: o, done: false });
    } else this.items.push(o);
  }

  /** Ends the stream without a final output (the consumer has gone). */
  end(): void {
    if (this.done) return;
    this.leaveWaiting();
    this.done = true;
    if (this.waiter && this.items.length === 0) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve({ value: undefined, done: true });
    }
  }

  fail(e: unknown): void {
    if (this.done) return;
    this.leaveWaiting();
    this.done = true;
    this.error = e;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(e);
    }
  }

  next(): Promise<IteratorResult<RequestOutput>> {
    const item = this.items.shift();
    if (item) return Promise.resolve({ value: item, done: false });
    if (this.error !== null) return Promise.reject(this.error);
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

export interface AsyncEngineOptions extends Omit<EngineOptions, "onModelDir"> {
  /**
   * Most requests (prompts: a batch request counts each) allowed to wait for their first output; more →
   * EngineOverloadedError. Default: no bound (vLLM queues every request).
   */
  maxWaitingRequests?: number;
}

interface Ready extends Extract<WorkerOut, { type: "ready" }> {}

export class AsyncEngine {
  private readonly streams = new Map<string, OutputStream>();
  private readonly processor: OutputProcessor;
  private accepting = true;
  private deadError: Error | null = null;
  private idleWaiters: (() => void)[] = [];
  /** LoRA calls waiting for the worker's answer, by callId. */
  private readonly loraCalls = new Map<number, { done: (answer: Extract<WorkerOut, { type: "lora-done" }>) => void; fail: (e: Error) => void }>();
  private nextCallId = 1;
  private onClosed: (() => void) | null = null;
  readonly maxWaitingRequests: number;
  /** Requests queued that have had no output yet. */
  private numQueued = 0;
  readonly info: EngineInfo;
  readonly modelConfig: ModelConfig;
  readonly limits: RequestLimits;
  readonly maxModelLen: number;
  /** Sampling defaults for fields a request leaves out (the model's generation config). */
  readonly samplingDefaults: SamplingDefaults;
  /** The latest snapshot of the engine's gauges and metrics. */
  stats: EngineStats;
  /** End-of-sequence ids: the model's and the tokenizer's (what ends a sequence unless ignore_eos). */
  readonly eosTokenIds: number[];

  private constructor(private readonly worker: Worker, ready: Ready, readonly tokenizer: TextTokenizer, opts: AsyncEngineOptions) {
    this.maxWaitingRequests = opts.maxWaitingRequests ?? Infinity;
    this.info = ready.info;
    this.modelConfig = ready.modelConfig;
    this.limits = ready.limits;
    this.maxModelLen = ready.limits.maxModelLen;
    this.samplingDefaults = ready.info.samplingDefaults;
    this.stats = ready.stats;
    this.eosTokenIds = [...new Set([...ready.eosTokenIds, ...tokenizer.eosTokenIds])];
    this.processor = new OutputProcessor(tokenizer);
    worker.onmessage = (ev: MessageEvent<WorkerOut>) => this.onMessage(ev.data);
    // Before any request: the worker's engine knows the model's EOS ids, not the tokenizer's.
    this.post({ type: "eos", tokenIds: tokenizer.eosTokenIds });
    worker.onerror = (ev) => this.die(new Error(ev.message));
  }

  /**
   * Starts the engine worker and resolves once the model is loaded. This thread loads the tokenizer as
   * soon as the worker names the model directory, while the worker loads the model (without one).
   */
  static async start(opts: AsyncEngineOptions = {}): Promise<AsyncEngine> {
    const { log, maxWaitingRequests: _, ...engineOptions } = opts;
    const say = log ?? ((m: string) => process.stderr.write(`[vbun] ${m}\n`));
    const worker = new Worker(ENGINE_WORKER_URL, workerOptions());
    let tokenizer: { ok: TextTokenizer } | { error: unknown } | null = null;
    const loadTokenizer = (dir: string) => {
      if (tokenizer) return;
      try {
        const t0 = performance.now();
        tokenizer = { ok: TextTokenizer.load(dir, opts.chatTemplate) };
        say(`tokenizer loaded in ${((performance.now() - t0) / 1000).toFixed(2)}s`);
      } catch (e) {
        tokenizer = { error: e };
      }
    };
    const ready = await new Promise<Ready>((resolve, reject) => {
      worker.onmessage = (ev: MessageEvent<WorkerOut>) => {
        const m = ev.data;
        if (m.type === "log") say(m.message);
        else if (m.type === "model-dir") loadTokenizer(opts.tokenizer ?? m.modelDir);
        else if (m.type === "ready") resolve(m);
        else if (m.type === "failed") reject(new Error(m.message));
      };
      worker.onerror = (ev) => reject(new Error(ev.message));
      worker.postMessage({ type: "init", options: { ...engineOptions, skipTokenizerInit: true } } satisfies WorkerIn);
    }).catch((e) => {
      worker.terminate();
      throw e;
    });
    loadTokenizer(ready.info.tokenizerDir);
    const loaded = tokenizer as { ok: TextTokenizer } | { error: unknown } | null;
    if (!loaded || "error" in loaded) {
      worker.terminate();
      throw loaded ? loaded.error : new Error("the tokenizer was not loaded");
    }
    return new AsyncEngine(worker, ready, loaded.ok, opts);
  }

  get isHealthy(): boolean {
    return this.deadError === null;
  }

  get numRunning(): number {
    return this.stats.running;
  }

  get numWaiting(): number {
    return this.stats.waiting;
  }

  /**
   * Queues a request and returns its output stream. Validation errors throw synchronously. The outputs
   * are "delta" ones (request.ts OutputKind): each carries what is new, the last one also the whole
   * text, token ids and logprobs — so no step copies (or sends between threads) a growing array. `lora`:
   * the LoRA adapter to run it with, by name (null: the base model).
   */
  generate(requestId: string, prompt: number[], params: SamplingParams, lora: string | null = null): AsyncIterableIterator<RequestOutput> {
    if (this.deadError) throw new EngineUnavailableError(`the engine failed: ${this.deadError.message}`);
    if (!this.accepting) throw new EngineUnavailableError("the server is shutting down");
    if (this.streams.has(requestId)) throw new InvalidRequestError(`request id '${requestId}' is already in use`, "request_id");
    const promptTokenIds = params.truncatePrompt(prompt, this.maxModelLen);
    params.tokenizeBadWords((t) => this.tokenizer.encode(t, false));
    validateRequest(promptTokenIds, params, this.limits);
    checkLoraModule(this.info.loraModules, lora);
    if (this.numQueued >= this.maxWaitingRequests) throw new EngineOverloadedError(`the server is overloaded: ${this.numQueued} requests are already waiting (--max-waiting-requests ${this.maxWaitingRequests})`);
    const stream = new OutputStream(() => this.numQueued--);
    this.numQueued++;
    this.streams.set(requestId, stream);
    this.processor.add(requestId, promptTokenIds, params);
    this.post({ type: "add", requestId, promptTokenIds, params: params.toInit(), arrivalTime: performance.now(), outputKind: "delta", lora });
    return stream;
  }

  /**
   * vLLM's run-time LoRA loading: makes the adapter in `dir` servable as `name` (a request's model). Rejects
   * with InvalidRequestError when the engine cannot serve it (not a PEFT LoRA adapter of this model, rank
   * above --max-lora-rank, a name in use, LoRA not enabled).
   */
  async addLora(name: string, dir: string): Promise<void> {
    await this.loraCall({ op: "add", name, dir });
  }

  /** Forgets a run-time or --lora-modules adapter's name; false when no adapter has it. Requests already queued with it finish. */
  async removeLora(name: string): Promise<boolean> {
    return (await this.loraCall({ op: "remove", name })).found;
  }

  private loraCall(call: { op: "add"; name: string; dir: string } | { op: "remove"; name: string }): Promise<{ found: boolean }> {
    if (this.deadError) throw new EngineUnavailableError(`the engine failed: ${this.deadError.message}`);
    const callId = this.nextCallId++;
    return new Promise((resolve, reject) => {
      this.loraCalls.set(callId, {
        done: (answer) => {
          // /v1/models and request checks see the adapters as the engine knows them now.
          this.info.loraModules = answer.modules;
          if (answer.error !== null) reject(new InvalidRequestError(answer.error, call.op === "add" ? "lora_path" : "lora_name"));
          else resolve(answer);
        },
        fail: reject,
      });
      this.post({ type: "lora", callId, ...call });
    });
  }

  /** Aborts a request (client gone): the engine frees its blocks; its stream ends. */
  abort(requestId: string): void {
    const stream = this.streams.get(requestId);
    if (!stream) return;
    this.streams.delete(requestId);
    this.processor.remove(requestId);
    stream.end();
    this.post({ type: "abort", requestId });
    this.notifyIdle();
  }

  private post(m: WorkerIn): void {
    this.worker.postMessage(m);
  }

  private onMessage(m: WorkerOut): void {
    switch (m.type) {
      case "outputs":
        // Gauges every step; histograms and per-reason counts only now and then (engine-worker.ts).
        this.stats = "histograms" in m.stats ? m.stats : { ...this.stats, ...m.stats };
        for (const o of unpackOutputs(m.outputs)) {
          const s = this.streams.get(o.requestId);
          if (!s) continue;
          const { output, stop } = this.processor.process(o);
          if (stop.length > 0) this.post({ type: "stop", requestId: o.requestId, indices: stop });
          if (!output) continue;
          s.push(output);
          if (output.finished) this.streams.delete(o.requestId);
        }
        this.notifyIdle();
        break;
      case "aborted":
      case "stats":
        this.stats = m.stats;
        break;
      case "rejected": {
        const s = this.streams.get(m.requestId);
        this.streams.delete(m.requestId);
        this.processor.remove(m.requestId);
        s?.fail(new InvalidRequestError(m.message));
        this.notifyIdle();
        break;
      }
      case "failed":
        this.die(new Error(m.message));
        break;
      case "log":
        process.stderr.write(`[vbun] ${m.message}\n`);
        break;
      case "lora-done":
        this.loraCalls.get(m.callId)?.done(m);
        this.loraCalls.delete(m.callId);
        break;
      case "closed":
        this.onClosed?.();
        break;
    }
  }

  private die(e: Error): void {
    if (this.deadError) return;
    this.deadError = e;
    process.stderr.write(`[vbun] the engine failed: ${e.message}\n`);
    for (const [id, s] of this.streams) {
      s.fail(new EngineUnavailableError(`the engine failed: ${e.message}`));
      this.processor.remove(id);
    }
    this.streams.clear();
    for (const call of this.loraCalls.values()) call.fail(new EngineUnavailableError(`the engine failed: ${e.message}`));
    this.loraCalls.clear();
    this.notifyIdle();
  }

  private notifyIdle(): void {
    if (this.streams.size > 0) return;
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  /** Stops accepting; lets in-flight requests finish for up to graceMs, then aborts the rest and stops the worker. */
  async shutdown(graceMs: number): Promise<void> {
    this.accepting = false;
    if (this.streams.size > 0) {
      await Promise.race([
        new Promise<void>((r) => this.idleWaiters.push(r)),
        new Promise<void>((r) => setTimeout(r, graceMs)),
      ]);
    }
    for (const id of [...this.streams.keys()]) this.abort(id);
    // Let the engine stop what it owns (tensor-parallel workers), then end its thread.
    const closed = new Promise<void>((resolve) => (this.onClosed = resolve));
    this.post({ type: "shutdown" });
    await Promise.race([closed, Bun.sleep(5000)]);
    this.worker.terminate();
  }
}
