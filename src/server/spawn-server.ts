/**
 * `vbun serve` as a child process, for the tools that drive a real server (tests, scripts/bench-serve,
 * scripts/bench's cold start): starts it, reads its log until it is ready, and keeps draining the log so
 * the child never blocks on a full pipe (the server logs to stderr only).
 */
import { join } from "node:path";

export interface RunningServer {
  url: string;
  proc: import("bun").Subprocess<"ignore", "pipe", "pipe">;
  /** Everything the server has written to stderr so far. */
  stderr: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<number>;
}

/** The command that runs `vbun serve ARGS` from the sources on a free port. */
export function serveCommand(args: string[]): string[] {
  return [process.execPath, join(import.meta.dir, "..", "cli.ts"), "serve", ...args, "--port", "0"];
}

/** Starts `cmd` (a vbun server) and resolves once it logs "ready in"; fails if it exits first or takes over `timeoutMs`. */
export async function spawnServer(cmd: string[], opts: { env?: Record<string, string | undefined>; cwd?: string; timeoutMs?: number } = {}): Promise<RunningServer> {
  const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: opts.env ?? process.env, cwd: opts.cwd });
  let err = "";
  const reader = proc.stderr.getReader();
  const dec = new TextDecoder();
  const deadline = Date.now() + (opts.timeoutMs ?? Infinity);
  let url = "";
  while (!/ready in/.test(err)) {
    const { value, done } = await reader.read();
    if (done || Date.now() > deadline) throw new Error(`server did not start:\n${err}`);
    err += dec.decode(value);
    const m = err.match(/listening on (http:\/\/[\d.]+:\d+)/);
    if (m) url = m[1]!;
  }
  // Keep draining stderr so the process never blocks on a full pipe.
  void (async () => { for (;;) { const { value, done } = await reader.read(); if (done) break; err += dec.decode(value); } })();
  return {
    url, proc, stderr: () => err,
    stop: async (signal = "SIGTERM") => { proc.kill(signal); return await proc.exited; },
  };
}
