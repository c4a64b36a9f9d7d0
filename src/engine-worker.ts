/**
 * The engine core, run in a Worker so that model steps never block the server's event loop
 * (vLLM's EngineCore process, as a thread). Messages in: init, add, abort, stop, eos, shutdown. Messages out:
 * model-dir, ready, outputs, aborted, stats, rejected, failed, closed. Between steps it yields so that incoming adds and aborts are handled.
 */
import { engineGauges, engineStats } from "./engine/engine-stats.ts";
import { LLMEngine } from "./engine/llm-engine.ts";
import { packOutputs } from "./engine/output-codec.ts";
import { SamplingParams } from "./engine/sampling-params.ts";
import type { EngineOptions } from "./engine/engine-config.ts";
import type { WorkerIn, WorkerOut } from "./engine/engine-protocol.ts";

declare const self: Worker;

let engine: LLMEngine | null = null;
let looping = false;
const post = (m: WorkerOut) => self.postMessage(m);

function fail(e: unknown): void {
  const err = e as Error;
  post({ type: "failed", message: err?.message ?? String(e), stack: err?.stack ?? "" });
  engine = null;
}

/**
 * Step outputs carry the cheap gauges every step, and the histograms only when a request finished, at
 * most every STATS_MS otherwise, and on the last step before the loop idles — /metrics may lag a
 * running request's inter-token histogram by that much, never a finished request.
 */
const STATS_MS = 200;
let statsSentAt = 0;

async function loop(): Promise<void> {
  if (!engine || !engine.hasUnfinishedRequests()) {
    looping = false;
    return;
  }
  try {
    // Structured outputs: grammars to compile and next-token masks to make (adds and aborts may arrive meanwhile).
    if (engine.needsPrepare()) {
      const e = engine;
      for (const r of await e.prepare()) post({ type: "rejected", requestId: r.requestId, message: r.message });
      if (engine !== e) return; // shut down or failed meanwhile
      if (!engine.hasUnfinishedRequests()) {
        looping = false;
        return;
      }
    }
    const outputs = engine.step();
    const now = performance.now();
    const full = now - statsSentAt >= STATS_MS || !engine.hasUnfinishedRequests() || outputs.some((o) => o.finished);
    if (full) statsSentAt = now;
    post({ type: "outputs", outputs: packOutputs(outputs), stats: full ? engineStats(engine) : engineGauges(engine) });
  } catch (e) {
    fail(e);
    return;
  }
  setImmediate(loop);
}

self.onmessage = (ev: MessageEvent<WorkerIn>) => {
  const m = ev.data;
  try {
    if (m.type === "init") {
      const opts: EngineOptions = { ...m.options, log: (msg) => post({ type: "log", message: msg }), onModelDir: (dir) => post({ type: "model-dir", modelDir: dir }) };
      engine = LLMEngine.create(opts);
      post({ type: "ready", info: engine.info, modelConfig: engine.modelConfig, limits: engine.limits, options: { ...engine.options }, eosTokenIds: engine.eosTokenIds, stats: engineStats(engine) });
      return;
    }
    if (!engine) return;
    if (m.type === "add") {
      try {
        engine.addRequest(m.requestId, m.promptTokenIds, new SamplingParams(m.params), m.arrivalTime, m.outputKind, m.lora);
      } catch (e) {
        post({ type: "rejected", requestId: m.requestId, message: (e as Error).message });
        return;
      }
      if (!looping) {
        looping = true;
        setImmediate(loop);
      }
    } else if (m.type === "shutdown") {
      engine.close();
      engine = null;
      post({ type: "closed" });
    } else if (m.type === "abort") {
      const out = engine.abort(m.requestId);
      post({ type: "aborted", requestId: m.requestId, output: out, stats: engineStats(engine) });
    } else if (m.type === "stop") {
      engine.stopSequences(m.requestId, m.indices);
      post({ type: "stats", stats: engineStats(engine) });
    } else if (m.type === "lora") {
      let error: string | null = null, found = true;
      try {
        if (m.op === "add") engine.addLora(m.name, m.dir);
        else found = engine.removeLora(m.name);
      } catch (e) {
        error = (e as Error).message;
      }
      post({ type: "lora-done", callId: m.callId, error, found, modules: engine.info.loraModules });
    } else if (m.type === "eos") {
      engine.addEosTokenIds(m.tokenIds);
    }
  } catch (e) {
    fail(e);
  }
};
