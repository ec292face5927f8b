// Stop-string matching over streamed text. The matcher holds back the longest suffix of the text
// that is a prefix of some stop string, so a client never sees part of a stop string.

export interface StopPush {
  /** Text that is safe to send to the client now. */
  emit: string;
  /** True once a stop string matched; `emit` then ends right before it. */
  stopped: boolean;
}

export class StopMatcher {
  private readonly stops: string[];
  private readonly maxLen: number;
  private held = "";
  private done = false;

  /** `stops` must be non-empty strings (validated by the caller); an empty list passes text through. */
  constructor(stops: string[]) {
    this.stops = stops.filter((s) => s.length > 0);
    this.maxLen = this.stops.reduce((a, s) => Math.max(a, s.length), 0);
  }

  get stopped(): boolean {
    return this.done;
  }

  push(delta: string): StopPush {
    if (this.done) return { emit: "", stopped: true };
    if (this.stops.length === 0) return { emit: delta, stopped: false };
    const buf = this.held + delta;
    // Earliest match wins. Emitted text never held a stop prefix, so a match starts within `buf`.
    let at = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      this.done = true;
      this.held = "";
      return { emit: buf.slice(0, at), stopped: true };
    }
    const hold = this.partialSuffix(buf);
    this.held = buf.slice(buf.length - hold);
    return { emit: buf.slice(0, buf.length - hold), stopped: false };
  }

  /** End of generation: release held-back text (nothing after a stop). */
  flush(): string {
    const out = this.done ? "" : this.held;
    this.held = "";
    return out;
  }

  /** Length of the longest suffix of `buf` that is a proper prefix of some stop string. */
  private partialSuffix(buf: string): number {
    const upper = Math.min(this.maxLen - 1, buf.length);
    for (let j = upper; j > 0; j--) {
      const start = buf.length - j;
      for (const s of this.stops) {
        if (s.length > j && s.startsWith(buf.slice(start))) return j;
      }
    }
    return 0;
  }
}
