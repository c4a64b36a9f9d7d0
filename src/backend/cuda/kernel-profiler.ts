/**
 * Per-kernel GPU time, for finding where a step's time goes (`scripts/bench --profile`). Each launch and
 * GEMM is bracketed by two events on the stream; at the next synchronize the pairs are read and summed by
 * name. Events cost the stream a little time per launch, so totals are for proportions, not for the
 * headline numbers. Off by default; never active while a graph is being captured.
 */
import type { DeviceDriver } from "./driver.ts";

export interface KernelTime { name: string; calls: number; ms: number }

export class KernelProfiler {
  private readonly pool: bigint[] = [];
  private readonly pending: { name: string; start: bigint; end: bigint }[] = [];
  private readonly totals = new Map<string, KernelTime>();

  constructor(private readonly driver: DeviceDriver) {}

  private event(): bigint {
    return this.pool.pop() ?? this.driver.createEvent();
  }

  /** Records the start event; pass its result to end(). */
  begin(stream: bigint): bigint {
    const e = this.event();
    this.driver.record(e, stream);
    return e;
  }

  end(name: string, start: bigint, stream: bigint): void {
    const e = this.event();
    this.driver.record(e, stream);
    this.pending.push({ name, start, end: e });
  }

  /** Reads the finished pairs (the stream has been synchronized) into the totals. */
  collect(): void {
    for (const p of this.pending) {
      const ms = this.driver.elapsedMs(p.start, p.end);
      const t = this.totals.get(p.name) ?? { name: p.name, calls: 0, ms: 0 };
      t.calls++;
      t.ms += ms;
      this.totals.set(p.name, t);
      this.pool.push(p.start, p.end);
    }
    this.pending.length = 0;
  }

  /** Totals by name, largest first. */
  report(): KernelTime[] {
    this.collect();
    return [...this.totals.values()].sort((a, b) => b.ms - a.ms);
  }

  reset(): void {
    this.collect();
    this.totals.clear();
  }
}
