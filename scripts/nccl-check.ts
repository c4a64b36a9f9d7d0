#!/usr/bin/env bun
// On a device: initialise NCCL for every visible GPU (N = 1 on a single card), all-reduce a known
// buffer, check the sums, destroy; then initialise again and abort (the failure path's call). Prints one
// JSON line; exits 1 on a wrong result.
import { Driver } from "../src/backend/cuda/driver.ts";
import { Nccl, NCCL_FLOAT32 } from "../src/backend/cuda/nccl.ts";

const driver = Driver.load();
const n = driver.deviceCount();
const nccl = new Nccl();
const devices = Array.from({ length: n }, (_, i) => i);
const ctxs = devices.map((d) => driver.primaryContext(driver.device(d)));
const comms = nccl.initAll(devices);
const count = 1 << 20;
const bufs = devices.map((d) => {
  driver.setCurrent(ctxs[d]!);
  const stream = driver.createStream();
  const buf = driver.alloc(count * 4);
  driver.copyToDevice(buf, new Float32Array(count).map((_, i) => (i % 7) + d));
  return { buf, stream };
});
nccl.allReduce(devices.map((d) => ({ send: bufs[d]!.buf, recv: bufs[d]!.buf, count, dtype: NCCL_FLOAT32, comm: comms[d]!, stream: bufs[d]!.stream })));
let ok = true;
for (const d of devices) {
  driver.setCurrent(ctxs[d]!);
  driver.streamSynchronize(bufs[d]!.stream);
  const host = new Float32Array(count);
  driver.copyToHost(host, bufs[d]!.buf);
  for (let i = 0; i < count; i += 4099) {
    let want = 0;
    for (const r of devices) want += (i % 7) + r;
    if (host[i] !== want) { ok = false; break; }
  }
}
for (const c of comms) nccl.destroy(c);
// The failure path's call: fresh communicators, ended with ncclCommAbort.
for (const c of nccl.initAll(devices)) nccl.abort(c);
console.log(JSON.stringify({ nccl: nccl.path, version: nccl.version(), ranks: n, count, ok, abort: "ok" }));
process.exit(ok ? 0 : 1);
