/**
 * The streaming front of the engine for servers: a step loop on the event loop (yielding between steps so
 * HTTP stays responsive) and one async iterator of outputs per request. Bounded waiting queue; graceful
 * shutdown.
 */
import { LLMEngine, type PromptInput } from "./llm-engine.ts";
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
  private waiter: ((r: IteratorResult<RequestOutput>) => void) | null = null;
  private rejecter: ((e: unknown) => void) | null = null;
  private done = false;
  private error: unknown = null;

  push(o: RequestOutput): void {
    if (this.done) return;
    if (o.finished) this.done = true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = this.rejecter = null;
      w({ value: o, done: false });
    } else this.items.push(o);
  }

  fail(e: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = e;
    if (this.rejecter) {
      const r = this.rejecter;
      this.waiter = this.rejecter = null;
      r(e);
    }
  }

  next(): Promise<IteratorResult<RequestOutput>> {
    const item = this.items.shift();
    if (item) return Promise.resolve({ value: item, done: false });
    if (this.error !== null) return Promise.reject(this.error);
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.rejecter = reject;
    });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

export interface AsyncEngineOptions {
  /** Most requests allowed to wait for admission; more → EngineOverloadedError. */
  maxWaitingRequests?: number;
}

export class AsyncEngine {
  private readonly streams = new Map<string, OutputStream>();
  private loopRunning = false;
  private accepting = true;
  private deadError: Error | null = null;
  private idleWaiters: (() => void)[] = [];
  readonly maxWaitingRequests: number;
  /** Total step time and count (for /metrics and responsiveness checks). */
  stepMillis = 0;

  constructor(readonly engine: LLMEngine, opts: AsyncEngineOptions = {}) {
    this.maxWaitingRequests = opts.maxWaitingRequests ?? 1024;
  }

  get isHealthy(): boolean {
    return this.deadError === null;
  }

  get numRunning(): number {
    return this.engine.scheduler.running.length;
  }

  get numWaiting(): number {
    return this.engine.scheduler.waiting.length;
  }

  /** Queues a request and returns its output stream. Validation errors throw synchronously. */
  generate(requestId: string, prompt: PromptInput, params: SamplingParams): AsyncIterableIterator<RequestOutput> {
    if (this.deadError) throw new EngineUnavailableError(`the engine failed: ${this.deadError.message}`);
    if (!this.accepting) throw new EngineUnavailableError("the server is shutting down");
    if (this.engine.scheduler.waiting.length >= this.maxWaitingRequests)
      throw new EngineOverloadedError(`the server is overloaded: ${this.engine.scheduler.waiting.length} requests are already waiting`);
    this.engine.addRequest(requestId, prompt, params);
    const stream = new OutputStream();
    this.streams.set(requestId, stream);
    this.kick();
    return stream;
  }

  /** Aborts a request (client gone): frees its blocks and ends its stream. */
  abort(requestId: string): void {
    const out = this.engine.abort(requestId);
    const stream = this.streams.get(requestId);
    this.streams.delete(requestId);
    if (stream && out) stream.push(out);
    this.notifyIdle();
  }

  private kick(): void {
    if (this.loopRunning) return;
    this.loopRunning = true;
    setImmediate(() => this.loop());
  }

  private loop(): void {
    if (!this.engine.hasUnfinishedRequests()) {
      this.loopRunning = false;
      this.notifyIdle();
      return;
    }
    let outputs: RequestOutput[];
    const t0 = performance.now();
    try {
      outputs = this.engine.step();
    } catch (e) {
      this.die(e as Error);
      return;
    }
    this.stepMillis += performance.now() - t0;
    for (const o of outputs) {
      const s = this.streams.get(o.requestId);
      if (!s) continue;
      s.push(o);
      if (o.finished) this.streams.delete(o.requestId);
    }
    // Yield to the event loop (I/O, new requests, disconnects) before the next step.
    setImmediate(() => this.loop());
  }

  private die(e: Error): void {
    this.deadError = e;
    this.loopRunning = false;
    process.stderr.write(`[vbun] engine step failed: ${e.stack ?? e.message}\n`);
    for (const [id, s] of this.streams) {
      s.fail(new EngineUnavailableError(`the engine failed: ${e.message}`));
      try { this.engine.abort(id); } catch { /* already broken */ }
    }
    this.streams.clear();
    this.notifyIdle();
  }

  private notifyIdle(): void {
    if (this.engine.hasUnfinishedRequests()) return;
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  /** Stops accepting; lets in-flight requests finish for up to graceMs, then aborts the rest. */
  async shutdown(graceMs: number): Promise<void> {
    this.accepting = false;
    if (this.engine.hasUnfinishedRequests()) {
      await Promise.race([
        new Promise<void>((r) => this.idleWaiters.push(r)),
        new Promise<void>((r) => setTimeout(r, graceMs)),
      ]);
    }
    for (const id of [...this.streams.keys()]) this.abort(id);
  }
}
