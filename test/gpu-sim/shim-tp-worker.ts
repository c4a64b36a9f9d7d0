/**
 * A tensor-parallel rank's Worker whose GPU calls go through vbun's real bindings to the C-ABI shim: it
 * installs this thread's shim handler (simulated GPUs of its own, the leader's NCCL communicators adopted),
 * points the library search at the shim, then runs the real worker entry, src/tp-worker.ts, unchanged.
 * What it needs comes as the test NCCL's workerData (`ShimTpData`): Bun workers do not see environment
 * changes made after the process started.
 */
import "../../src/tp-worker.ts"; // sets self.onmessage (evaluated before this module's body)
import { installShim } from "./c-shim.ts";
import { SimulatedCAbi, type NcclShare } from "./c-abi.ts";
import type { TpWorkerInit } from "../../src/parallel/tp-group.ts";

declare const self: Worker;

export interface ShimTpData { share: NcclShare | null; env: Record<string, string> }

const realHandler = self.onmessage!;
self.onmessage = (ev: MessageEvent<TpWorkerInit>) => {
  const data = ev.data.cuda?.ncclData as ShimTpData | undefined;
  if (!data) throw new Error("shim-tp-worker: the init message carries no shim data (a GPU rank with the test's NCCL expected)");
  Object.assign(process.env, data.env);
  const abi = new SimulatedCAbi({ gpus: ev.data.sizes.size });
  (globalThis as { vbunShim?: unknown }).vbunShim = { abi, shim: installShim(data.env.VBUN_SHIM_DIR!, abi.handler) };
  abi.adoptNccl(data.share);
  realHandler.call(self, ev);
};
