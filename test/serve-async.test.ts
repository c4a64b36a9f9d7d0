/**
 * `vbun serve --async-scheduling` end to end: the same requests, streamed or not, give the same answers as
 * a server without it — stop strings found on the server's thread, n > 1, logprobs, penalties, seeds.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { SERVER_MODEL, startServer, tinyModel, type RunningServer } from "./helpers.ts";

const model = tinyModel(SERVER_MODEL);
const args = [model, "--max-model-len", "256", "--block-size", "8"];
let plain: RunningServer, overlapped: RunningServer;
beforeAll(async () => {
  [plain, overlapped] = await Promise.all([startServer(args), startServer([...args, "--async-scheduling"])]);
});
afterAll(async () => {
  expect(await plain.stop("SIGTERM")).toBe(0);
  expect(await overlapped.stop("SIGTERM")).toBe(0);
});

const REQUESTS: Record<string, unknown>[] = [
  { prompt: "Once upon a time", max_tokens: 24, temperature: 0 },
  { prompt: "The capital of", max_tokens: 24, temperature: 0.9, seed: 3, n: 2, stop: ["e", "a"] },
  { prompt: "Hello", max_tokens: 16, temperature: 0.7, seed: 9, logprobs: 2, presence_penalty: 1, frequency_penalty: 0.5, repetition_penalty: 1.2 },
  { prompt: "1, 2, 3,", max_tokens: 20, temperature: 0, stop: [" the"], include_stop_str_in_output: true, min_tokens: 4 },
];

async function answers(srv: RunningServer, stream: boolean): Promise<unknown[]> {
  return Promise.all(REQUESTS.map(async (body) => {
    const r = await fetch(`${srv.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...body, stream }) });
    expect(r.status).toBe(200);
    if (!stream) {
      const j = (await r.json()) as { choices: { index: number; text: string; finish_reason: string; stop_reason: unknown; logprobs: unknown }[]; usage: unknown };
      return { choices: j.choices.map((c) => [c.index, c.text, c.finish_reason, c.stop_reason, c.logprobs]), usage: j.usage };
    }
    const text = new Map<number, string>(), finish = new Map<number, string>();
    for (const line of (await r.text()).split("\n")) {
      if (!line.startsWith("data: {")) continue;
      for (const c of (JSON.parse(line.slice(6)) as { choices: { index: number; text: string; finish_reason: string | null }[] }).choices) {
        text.set(c.index, (text.get(c.index) ?? "") + c.text);
        if (c.finish_reason) finish.set(c.index, c.finish_reason);
      }
    }
    return [...text.keys()].sort().map((i) => [i, text.get(i), finish.get(i)]);
  }));
}

test("the flag reaches the engine worker", () => {
  expect(overlapped.stderr()).toContain("async scheduling: on");
  expect(plain.stderr()).not.toContain("async scheduling: on");
});

test("non-streamed answers are the same with and without async scheduling", async () => {
  const a = await answers(plain, false), b = await answers(overlapped, false);
  expect(b).toEqual(a);
  expect(JSON.stringify(a)).toContain('"stop"'); // some stop strings did end answers
});

test("streamed answers are the same, and equal the non-streamed ones", async () => {
  const a = await answers(plain, true), b = await answers(overlapped, true);
  expect(b).toEqual(a);
  const whole = (await answers(overlapped, false)) as { choices: unknown[][] }[];
  expect(a).toEqual(whole.map((w) => w.choices.map((c) => [c[0], c[1], c[2]])));
});
