/**
 * Stored Responses (--responses-store-size N): previous_response_id continues a conversation exactly as
 * sending it whole would; GET and DELETE /v1/responses/{id}; the store keeps the N most recently used.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import OpenAI from "openai";
import { SERVER_MODEL, startServer, tinyModel, type RunningServer } from "./helpers.ts";

const ENGINE_MS = 60_000;
let srv: RunningServer;
let client: OpenAI;
const NAME = "m";

beforeAll(async () => {
  srv = await startServer([tinyModel(SERVER_MODEL), "--served-model-name", NAME, "--responses-store-size", "3"]);
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "x", maxRetries: 0 });
});
afterAll(async () => { await srv?.stop(); });

const status = async (p: Promise<unknown>) => { try { await p; return 200; } catch (e) { return (e as { status?: number }).status; } };

describe("stored responses", () => {
  test("previous_response_id continues the conversation as if it were sent whole; GET returns the stored response", async () => {
    const first = await client.responses.create({ model: NAME, input: "My name is Ada.", instructions: "Be brief.", max_output_tokens: 5, temperature: 0 });
    expect((first as unknown as { store: boolean }).store).toBe(true);
    const next = await client.responses.create({ model: NAME, input: "What is my name?", previous_response_id: first.id, max_output_tokens: 5, temperature: 0 });
    expect(next.previous_response_id).toBe(first.id);
    // The same conversation sent whole (the earlier instructions are not carried over, as in OpenAI's API).
    const whole = await client.responses.create({
      model: NAME, store: false, max_output_tokens: 5, temperature: 0,
      input: [{ role: "user", content: "My name is Ada." }, { role: "assistant", content: first.output_text }, { role: "user", content: "What is my name?" }],
    });
    expect((whole as unknown as { store: boolean }).store).toBe(false);
    expect(next.output_text).toBe(whole.output_text);
    expect(next.usage!.input_tokens).toBe(whole.usage!.input_tokens);
    // A third turn chains through both.
    const third = await client.responses.create({ model: NAME, input: "And again?", previous_response_id: next.id, max_output_tokens: 3, temperature: 0 });
    expect(third.usage!.input_tokens).toBeGreaterThan(next.usage!.input_tokens);
    const got = await client.responses.retrieve(first.id);
    expect(got.id).toBe(first.id);
    expect(got.output_text).toBe(first.output_text);
    // store: false is never kept.
    expect(await status(client.responses.retrieve(whole.id))).toBe(404);
    expect(await status(client.responses.create({ model: NAME, input: "x", previous_response_id: whole.id, max_output_tokens: 1 }))).toBe(404);
  }, ENGINE_MS);

  test("a streamed response is stored too; DELETE forgets one; the oldest unused ones fall out", async () => {
    const stream = await client.responses.create({ model: NAME, input: "Hello", max_output_tokens: 4, temperature: 0, stream: true });
    let id = "";
    for await (const ev of stream) if (ev.type === "response.completed" || ev.type === "response.incomplete") id = ev.response.id;
    expect((await client.responses.retrieve(id)).id).toBe(id);
    const deleted = await fetch(`${srv.url}/v1/responses/${id}`, { method: "DELETE" });
    expect(await deleted.json()).toEqual({ id, object: "response", deleted: true });
    expect(await status(client.responses.retrieve(id))).toBe(404);
    // Capacity 3: after four more, the first of them is gone, the last three are there.
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await client.responses.create({ model: NAME, input: `n${i}`, max_output_tokens: 1 })).id);
    expect(await status(client.responses.retrieve(ids[0]!))).toBe(404);
    for (const kept of ids.slice(1)) expect(await status(client.responses.retrieve(kept))).toBe(200);
  }, ENGINE_MS);
});
