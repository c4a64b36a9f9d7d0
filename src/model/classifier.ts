/**
 * The score head of a sequence classifier (…ForSequenceClassification: rerankers, classifiers): logits =
 * W · h for the last token's final-norm hidden state h, W being [numLabels, hidden]. It runs on the host in
 * float32 after the model's pooling step reads h back — a few thousand multiply-adds per prompt, the same
 * on every backend and under tensor parallelism (the ranks' hidden states are replicated).
 */
import type { Checkpoint } from "../loader/checkpoint.ts";
import { DTYPE_BYTES, toFloat32 } from "../loader/dtype.ts";
import type { TensorView } from "../loader/safetensors.ts";
import type { ClassifierConfig, ModelConfig } from "./config.ts";
import { decoderPrefix } from "./causal-lm.ts";

export class SequenceClassifier {
  private constructor(readonly numLabels: number, private readonly hiddenSize: number, private readonly weight: Float32Array) {}

  /**
   * The head from the checkpoint: its score.weight, or for a converted causal LM (classifier_from_token)
   * rows of its LM head (the embeddings when tied), found through `tokenId` (the tokenizer's vocabulary).
   */
  static load(cfg: ModelConfig, ckpt: Checkpoint, tokenId: ((token: string) => number | undefined) | null): SequenceClassifier {
    const c = cfg.classifier!, H = cfg.hiddenSize;
    if (!c.fromTokens) return new SequenceClassifier(c.numLabels, H, toFloat32(ckpt.tensor("score.weight", [c.numLabels, H]).bytes, ckpt.tensor("score.weight").dtype));
    if (!tokenId) throw new Error(`${ckpt.dir}: classifier_from_token needs the tokenizer to find its tokens (do not skip the tokenizer)`);
    const ids = c.fromTokens.tokens.map((t) => {
      const id = tokenId(t);
      if (id === undefined) throw new Error(`${ckpt.dir}: classifier_from_token: '${t}' is not a token of the vocabulary`);
      if (id >= cfg.vocabSize) throw new Error(`${ckpt.dir}: classifier_from_token: '${t}' is token ${id}, outside the LM head's ${cfg.vocabSize} rows`);
      return id;
    });
    const m = decoderPrefix(ckpt);
    const head = cfg.tieWordEmbeddings || !ckpt.has("lm_head.weight") ? ckpt.tensor(`${m}embed_tokens.weight`, [cfg.vocabSize, H]) : ckpt.tensor("lm_head.weight", [cfg.vocabSize, H]);
    const rows = ids.map((id) => row(head, id, H));
    if (c.fromTokens.method === "no_post_processing") {
      const w = new Float32Array(rows.length * H);
      rows.forEach((r, i) => w.set(r, i * H));
      return new SequenceClassifier(rows.length, H, w);
    }
    // from_2_way_softmax: softmax([l_false, l_true])[1] = sigmoid(l_true − l_false), one label.
    return new SequenceClassifier(1, H, rows[1]!.map((x, i) => x - rows[0]![i]!));
  }

  /** The raw logits ([numLabels]) of one pooled hidden state. */
  logits(hidden: Float32Array): Float32Array {
    const H = this.hiddenSize, out = new Float32Array(this.numLabels);
    for (let l = 0; l < this.numLabels; l++) {
      let s = 0;
      for (let i = 0; i < H; i++) s += this.weight[l * H + i]! * hidden[i]!;
      out[l] = s;
    }
    return out;
  }
}

function row(t: TensorView, id: number, H: number): Float32Array {
  const n = H * DTYPE_BYTES[t.dtype];
  return toFloat32(t.bytes.subarray(id * n, (id + 1) * n), t.dtype);
}

/**
 * The scores of a classifier's logits, as vLLM's classify pooler makes them (HF's loss for the problem
 * type): softmax over several labels, sigmoid for one label or multi-label problems, none for regression;
 * the logits as they are with `useActivation` false (a request's or the pooler's use_activation).
 */
export function classifierScores(c: ClassifierConfig, logits: ArrayLike<number>, useActivation = true): number[] {
  const v = Array.from(logits);
  if (!useActivation || c.problemType === "regression") return v;
  if (c.problemType === "multi_label_classification" || v.length === 1) return v.map((x) => 1 / (1 + Math.exp(-x)));
  const max = Math.max(...v);
  const e = v.map((x) => Math.exp(x - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

/** The label with the highest logit (id2label). */
export function topLabel(c: ClassifierConfig, logits: ArrayLike<number>): string {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return c.labels[best]!;
}

/**
 * A cross-encoder's input for a (query, document) pair: the tokenizer's pair encoding of two texts, or two
 * token-id lists one after the other. Throws when one is a text and the other token ids.
 */
export function crossEncoderInput(tok: { encodePair(text: string, pair: string, addSpecialTokens?: boolean): number[] }, query: string | number[], doc: string | number[], addSpecialTokens = true): number[] {
  if (typeof query === "string" && typeof doc === "string") return tok.encodePair(query, doc, addSpecialTokens);
  if (typeof query !== "string" && typeof doc !== "string") return [...query, ...doc];
  throw new Error("give both texts of each pair as strings or both as token ids");
}
