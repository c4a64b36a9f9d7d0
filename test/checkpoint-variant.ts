/** Test checkpoints made from others: a copy with its config.json, tensors or extra files changed. */
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/loader/safetensors.ts";
import { tempDir } from "./helpers.ts";

/** A copy of `dir` changed by `edit` (config.json and the tensors, by name). */
export function variant(dir: string, name: string, edit: { config?: (c: Record<string, unknown>) => void; rename?: (n: string) => string | null; add?: TensorToWrite[]; files?: Record<string, unknown> }): string {
  const out = join(tempDir("variant"), name);
  cpSync(dir, out, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  edit.config?.(cfg);
  writeFileSync(join(out, "config.json"), JSON.stringify(cfg));
  if (edit.rename || edit.add) {
    const f = SafetensorsFile.open(join(dir, "model.safetensors"));
    const tensors = f.names().flatMap((n) => {
      const to = edit.rename ? edit.rename(n) : n;
      if (to === null) return [];
      const t = f.tensor(n);
      return [{ name: to, dtype: t.dtype, shape: [...t.shape], bytes: Uint8Array.from(t.bytes) }];
    });
    rmSync(join(out, "model.safetensors"));
    writeSafetensors(join(out, "model.safetensors"), [...tensors, ...(edit.add ?? [])]);
  }
  for (const [file, content] of Object.entries(edit.files ?? {})) {
    mkdirSync(join(out, file, ".."), { recursive: true });
    writeFileSync(join(out, file), JSON.stringify(content));
  }
  return out;
}

