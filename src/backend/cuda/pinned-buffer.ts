/** Page-locked host memory with a JS view (staging for async copies). */
import { toArrayBuffer, type Pointer } from "bun:ffi";
import type { DeviceDriver } from "./driver.ts";

/** Page-locked host buffer with a JS view. */
export class PinnedBuffer {
  readonly addr: bigint;
  readonly bytes: Uint8Array;
  constructor(driver: DeviceDriver, readonly size: number) {
    this.addr = driver.allocHost(size);
    this.bytes = new Uint8Array(toArrayBuffer(Number(this.addr) as Pointer, 0, size));
  }
}

