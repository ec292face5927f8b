// Incremental, UTF-8-safe detokenization for streaming (the prefix-offset / read-offset technique of
// Hugging Face TGI and vLLM `detokenize_incrementally`).
//
// The window ids[prefixOffset:] is decoded after each token; its first part ids[prefixOffset:readOffset]
// is left context whose text was already emitted (it makes decoders that strip a leading space, or
// merge across tokens, decode the new tokens as they would in the full sequence). Text is emitted up to
// any trailing U+FFFD run (a byte sequence that later tokens may complete); the window moves forward
// when its text ends cleanly. Cost per token is one decode of the window (two when it moves).

/** Prompt ids kept as left context for the first generated tokens. */
const PROMPT_CONTEXT = 5;
/** Drop consumed ids from the front once this many precede the window. */
const COMPACT_AT = 1024;

function stableEnd(text: string): number {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 0xfffd) end--;
  return end;
}

export class IncrementalDetokenizer {
  private readonly decode: (ids: number[]) => string;
  private ids: number[];
  private prefixOffset = 0;
  private readOffset: number;
  /** Chars of decode(ids[prefixOffset:]) already emitted. */
  private emitted: number;
  private out = "";

  constructor(decode: (ids: number[]) => string, promptIds: number[]) {
    this.decode = decode;
    this.ids = promptIds.slice(Math.max(0, promptIds.length - PROMPT_CONTEXT));
    this.readOffset = this.ids.length;
    this.emitted = this.ids.length > 0 ? decode(this.ids).length : 0;
  }

  /** Feeds generated ids; returns the new text, never ending in a partial character. */
  push(ids: number[]): string {
    let delta = "";
    for (const id of ids) delta += this.step(id);
    this.out += delta;
    return delta;
  }

  /** End of generation: emits what is held back, even if it has U+FFFD. */
  flush(): string {
    const text = this.decode(this.ids.slice(this.prefixOffset));
    const delta = text.length > this.emitted ? text.slice(this.emitted) : "";
    this.emitted = text.length;
    this.out += delta;
    return delta;
  }

  /** All generated text emitted so far. */
  get text(): string {
    return this.out;
  }

  private step(id: number): string {
    this.ids.push(id);
    const text = this.decode(this.ids.slice(this.prefixOffset));
    const end = stableEnd(text);
    let delta = "";
    if (end > this.emitted) {
      delta = text.slice(this.emitted, end);
      this.emitted = end;
    }
    if (end === text.length) {
      // Clean boundary: the tokens just read become the left context.
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      this.emitted = this.decode(this.ids.slice(this.prefixOffset)).length;
      if (this.prefixOffset >= COMPACT_AT) {
        this.ids = this.ids.slice(this.prefixOffset);
        this.readOffset -= this.prefixOffset;
        this.prefixOffset = 0;
      }
    }
    return delta;
  }
}
