/** Messages between the AsyncEngine (server thread) and the engine worker. Plain data only. */
import type { EngineInfo, RequestLimits } from "./llm-engine.ts";
import type { EngineOptions } from "./engine-config.ts";
import type { EngineGauges, EngineStats } from "./engine-stats.ts";
import type { ModelConfig } from "../model/config.ts";
import type { OutputKind, RequestOutput } from "./request.ts";
import type { SamplingParamsInit } from "./sampling-params.ts";
import type { StepOutputs } from "./output-codec.ts";

export type WorkerIn =
  | { type: "init"; options: Omit<EngineOptions, "log" | "onModelDir"> }
  | { type: "add"; requestId: string; promptTokenIds: number[]; params: SamplingParamsInit; arrivalTime: number; outputKind: OutputKind; lora: string | null }
  | { type: "abort"; requestId: string }
  /** The server's tokenizer's end-of-sequence ids (the worker's engine runs without a tokenizer). */
  | { type: "eos"; tokenIds: number[] }
  /** Sequences a stop string ended on the server's side (its OutputProcessor). */
  | { type: "stop"; requestId: string; indices: number[] }
  /** Run-time LoRA adapters (vLLM's add_lora / remove_lora); answered by "lora-done" with the same callId. */
  | { type: "lora"; callId: number; op: "add"; name: string; dir: string }
  | { type: "lora"; callId: number; op: "remove"; name: string }
  | { type: "shutdown" };

export type WorkerOut =
  | { type: "log"; message: string }
  | { type: "model-dir"; modelDir: string }
  | { type: "ready"; info: EngineInfo; modelConfig: ModelConfig; limits: RequestLimits; options: Record<string, unknown>; eosTokenIds: number[]; stats: EngineStats }
  | { type: "outputs"; outputs: StepOutputs; stats: EngineStats | EngineGauges }
  | { type: "aborted"; requestId: string; output: RequestOutput | null; stats: EngineStats }
  | { type: "stats"; stats: EngineStats }
  | { type: "rejected"; requestId: string; message: string }
  | { type: "failed"; message: string; stack: string }
  /** A "lora" call's answer: its error (null: done; for remove, `found` says whether the name was known) and the adapters known now. */
  | { type: "lora-done"; callId: number; error: string | null; found: boolean; modules: { name: string; dir: string }[] }
  | { type: "closed" };
