/**
 * The engine's LoRA adapters, as vLLM keeps them: any number known by name (from --lora-modules, loaded at run
 * time through /v1/load_lora_adapter, or named by an offline request with its path), and at most --max-loras
 * of them in the model's slots at once. A waiting sequence is admitted only when its adapter is in a slot or
 * a slot is free (no running sequence uses it); the least recently used free slot then takes the adapter,
 * and the model is told before the step that first uses it (takeLoads).
 */
import type { ModelConfig } from "../model/config.ts";
import { loadLoraAdapter, LoraAdapterError, loraUncovered, type LoraAdapter, type LoraCoverage } from "./lora-adapter.ts";

/** An adapter the engine knows. `id` is unique for the engine's life: a name loaded again gets a new one. */
export interface LoraRequest {
  readonly id: number;
  readonly name: string;
  readonly dir: string;
  readonly adapter: LoraAdapter;
}

/** What a sequence needs of LoRA: its adapter (null: the base model) and the slot it runs in while admitted. */
export interface LoraUser {
  readonly lora: LoraRequest | null;
  loraSlot: number;
}

interface Slot {
  lora: LoraRequest | null;
  /** Admitted sequences that run with it. */
  users: number;
  lastUsed: number;
}

const NO_LOADS: readonly { slot: number; lora: LoraRequest }[] = [];

export class LoraManager {
  private readonly byName = new Map<string, LoraRequest>();
  private readonly slots: Slot[];
  /** Slots whose adapter changed since takeLoads(). */
  private readonly changed = new Set<number>();
  private nextId = 1;
  private clock = 0;

  constructor(
    readonly cfg: ModelConfig,
    /** vLLM's --max-loras: adapters in the model at once (and so in one batch). */
    readonly maxLoras: number,
    /** vLLM's --max-lora-rank. */
    readonly maxRank: number,
    /** The projections the model's LoRA slots cover (an adapter must fit them). */
    readonly coverage: LoraCoverage,
  ) {
    this.slots = Array.from({ length: maxLoras }, () => ({ lora: null, users: 0, lastUsed: 0 }));
  }

  /** The adapters known by name, in the order they were added. */
  get modules(): { name: string; dir: string }[] {
    return [...this.byName.values()].map((r) => ({ name: r.name, dir: r.dir }));
  }

  get(name: string): LoraRequest | undefined {
    return this.byName.get(name);
  }

  /**
   * Reads and checks an adapter and makes it known as `name` (it takes a slot when a request first needs it).
   * Throws LoraAdapterError naming the directory when it cannot serve it, or when the name is taken.
   */
  add(name: string, dir: string): LoraRequest {
    if (name === "") throw new LoraAdapterError(dir, "an adapter needs a name");
    const known = this.byName.get(name);
    if (known) throw new LoraAdapterError(dir, `the name '${name}' is already in use (by ${known.dir}); unload it first`);
    const adapter = loadLoraAdapter(name, dir, this.cfg, this.maxRank);
    const uncovered = loraUncovered(adapter, this.coverage);
    if (uncovered.length > 0)
      throw new LoraAdapterError(dir, `it targets ${uncovered.slice(0, 4).join(", ")}${uncovered.length > 4 ? ` and ${uncovered.length - 4} more` : ""}, which this engine's LoRA layers leave out: they were fitted at start to the --lora-modules adapters' projections (allow run-time LoRA updating — VLLM_ALLOW_RUNTIME_LORA_UPDATING=true, or LLM's allowRuntimeLoraUpdating — to cover every projection)`);
    const req: LoraRequest = { id: this.nextId++, name, dir, adapter };
    this.byName.set(name, req);
    return req;
  }

  /** Forgets an adapter's name; sequences already running or waiting with it finish with it. False if unknown. */
  remove(name: string): boolean {
    return this.byName.delete(name);
  }

  /** True when a sequence with `lora` could be admitted now: it is in a slot, or some slot has no users. */
  canAcquire(lora: LoraRequest | null): boolean {
    return lora === null || this.slots.some((s) => s.lora === lora || s.users === 0);
  }

  /** Gives an admitted sequence its slot (see canAcquire, which must hold): the one holding its adapter, else the least recently used free one. */
  acquire(user: LoraUser): void {
    if (user.lora === null || user.loraSlot >= 0) return;
    let slot = this.slots.findIndex((s) => s.lora === user.lora);
    if (slot < 0) {
      // A free slot: an empty one first, then the one unused the longest.
      const free = this.slots.map((s, i) => ({ s, i })).filter(({ s }) => s.users === 0);
      free.sort((a, b) => Number(a.s.lora !== null) - Number(b.s.lora !== null) || a.s.lastUsed - b.s.lastUsed);
      slot = free[0]?.i ?? -1;
      if (slot < 0) throw new Error(`LoraManager.acquire: all ${this.slots.length} LoRA slots are in use (check canAcquire first)`);
      this.slots[slot]!.lora = user.lora;
      this.changed.add(slot);
    }
    const s = this.slots[slot]!;
    s.users++;
    s.lastUsed = ++this.clock;
    user.loraSlot = slot;
  }

  /** A sequence leaves the running set (finished, aborted or preempted): its slot loses a user. */
  release(user: LoraUser): void {
    if (user.loraSlot < 0) return;
    const s = this.slots[user.loraSlot]!;
    s.users--;
    s.lastUsed = ++this.clock;
    user.loraSlot = -1;
  }

  /** The slots whose adapter changed since the last call, with their new adapter: the model must load them before the next step. */
  takeLoads(): readonly { slot: number; lora: LoraRequest }[] {
    if (this.changed.size === 0) return NO_LOADS; // every step asks: no allocation when nothing changed
    const out = [...this.changed].sort((a, b) => a - b).map((slot) => ({ slot, lora: this.slots[slot]!.lora! }));
    this.changed.clear();
    return out;
  }

  /** The adapters in the slots now (null: empty) — tests and logs. */
  get resident(): (string | null)[] {
    return this.slots.map((s) => s.lora?.name ?? null);
  }
}
