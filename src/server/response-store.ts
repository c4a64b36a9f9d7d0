/**
 * Stored Responses (--responses-store-size N): each response object and the conversation it ends — its
 * input items after those of the response it continued, then its output items — so a request naming it as
 * `previous_response_id` continues that conversation, and GET /v1/responses/{id} returns it. In memory,
 * the N most recently used; a response that falls out is gone (its id then answers 404).
 */
export interface StoredResponse {
  response: Record<string, unknown>;
  /** Responses API input items: the whole conversation up to and including this response's output. */
  items: unknown[];
}

export class ResponseStore {
  private readonly entries = new Map<string, StoredResponse>();

  constructor(readonly capacity: number) {}

  put(id: string, entry: StoredResponse): void {
    this.entries.delete(id);
    this.entries.set(id, entry);
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
  }

  /** The stored response, now the most recently used; undefined if unknown or dropped. */
  get(id: string): StoredResponse | undefined {
    const e = this.entries.get(id);
    if (e) {
      this.entries.delete(id);
      this.entries.set(id, e);
    }
    return e;
  }

  delete(id: string): boolean {
    return this.entries.delete(id);
  }
}
