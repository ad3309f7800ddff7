// CTC greedy decoding of a recogniser's per-step class probabilities, as PaddleOCR's CTCLabelDecode does it, with
// one addition for word gaps (see `spaceThreshold`).

export interface Decoded {
  readonly text: string;
  /** Mean probability of the characters kept (0 when none). */
  readonly score: number;
}

export interface CtcOptions {
  /** The class that is a space (PaddleOCR appends it after the dictionary), or -1 for none. */
  readonly spaceClass?: number;
  /**
   * A gap of blank steps between two characters reads as a space when the space class reached this probability in
   * it. PaddleOCR's Chinese recogniser, reading Latin text, usually leaves word gaps blank with the space class
   * second (0.1–0.3 where words part, under 0.01 between letters of a word); greedy decoding alone would run words
   * together. 1 turns this off (plain greedy decoding).
   */
  readonly spaceThreshold?: number;
}

/**
 * Decodes one line: at each of `steps` steps the most probable of `classes` classes (row-major `probs`, starting at
 * `offset`); repeats collapse, class 0 (the CTC blank) is dropped, class k ≥ 1 is `charset[k − 1]`.
 */
export function ctcDecode(probs: ArrayLike<number>, steps: number, classes: number, charset: readonly string[], offset = 0, options: CtcOptions = {}): Decoded {
  const { spaceClass = -1, spaceThreshold = 1 } = options;
  let text = '', sum = 0, kept = 0, prev = -1, gapSpace = 0;
  for (let t = 0; t < steps; t++) {
    const base = offset + t * classes;
    let best = 0, p = probs[base]!;
    for (let c = 1; c < classes; c++) {
      const q = probs[base + c]!;
      if (q > p) [best, p] = [c, q];
    }
    if (best === 0 && spaceClass >= 0) gapSpace = Math.max(gapSpace, probs[base + spaceClass]!);
    if (best !== 0 && best !== prev) {
      if (best !== spaceClass && gapSpace >= spaceThreshold && text.length > 0 && !text.endsWith(' ')) text += ' ';
      text += charset[best - 1] ?? '';
      sum += p;
      kept++;
      gapSpace = 0;
    }
    prev = best;
  }
  return { text, score: kept > 0 ? sum / kept : 0 };
}
