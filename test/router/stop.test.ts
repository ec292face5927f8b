import { describe, expect, it } from "vitest";
import { StopMatcher } from "../../services/router/stop.js";

function run(stops: string[], deltas: string[]): { emitted: string[]; stopped: boolean; tail: string } {
  const m = new StopMatcher(stops);
  const emitted: string[] = [];
  let stopped = false;
  for (const d of deltas) {
    const r = m.push(d);
    emitted.push(r.emit);
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  return { emitted, stopped, tail: m.flush() };
}

describe("StopMatcher", () => {
  it("passes text through without stops", () => {
    const r = run([], ["Hello", " wor", "ld"]);
    expect(r.emitted).toEqual(["Hello", " wor", "ld"]);
    expect(r.stopped).toBe(false);
    expect(r.tail).toBe("");
  });

  it("matches within one delta", () => {
    const r = run(["STOP"], ["abc STOP def"]);
    expect(r.emitted).toEqual(["abc "]);
    expect(r.stopped).toBe(true);
    expect(r.tail).toBe("");
  });

  it("matches across delta boundaries and never shows part of the stop", () => {
    const r = run(["\n\nUser:"], ["Hi there", "\n", "\nUs", "er", ":", " more"]);
    expect(r.emitted).toEqual(["Hi there", "", "", "", ""]);
    expect(r.stopped).toBe(true);
    for (const e of r.emitted) expect(e).not.toContain("\n");
  });

  it("releases a held-back prefix when it diverges", () => {
    const m = new StopMatcher(["</end>"]);
    expect(m.push("x </e")).toEqual({ emit: "x ", stopped: false });
    expect(m.push("nd")).toEqual({ emit: "", stopped: false });
    expect(m.push("X")).toEqual({ emit: "</endX", stopped: false });
    expect(m.push("<")).toEqual({ emit: "", stopped: false });
    expect(m.flush()).toBe("<");
  });

  it("re-holds an overlapping prefix after divergence", () => {
    // "aab" contains stop "ab" starting at index 1: the held "a" diverges but a new prefix starts
    const m = new StopMatcher(["ab"]);
    expect(m.push("a")).toEqual({ emit: "", stopped: false });
    expect(m.push("a")).toEqual({ emit: "a", stopped: false });
    expect(m.push("b!")).toEqual({ emit: "", stopped: true });
  });

  it("earliest match wins among several stops", () => {
    const r = run(["world", "lo w", "xyz"], ["hel", "lo world"]);
    expect(r.emitted.join("")).toBe("hel");
    expect(r.stopped).toBe(true);
    const r2 = run(["END", "."], ["one. two END"]);
    expect(r2.emitted.join("")).toBe("one");
  });

  it("holds the longest partial prefix of any stop", () => {
    const m = new StopMatcher(["abcd", "cx"]);
    expect(m.push("zzabc")).toEqual({ emit: "zz", stopped: false });
    expect(m.push("x")).toEqual({ emit: "ab", stopped: true });
  });

  it("ignores pushes after a stop", () => {
    const m = new StopMatcher(["#"]);
    expect(m.push("a#b")).toEqual({ emit: "a", stopped: true });
    expect(m.push("more")).toEqual({ emit: "", stopped: true });
    expect(m.flush()).toBe("");
  });

  it("handles multi-unit characters in stops and text", () => {
    const r = run(["😀!"], ["naïve ", "😀", "?", " 😀", "!"]);
    expect(r.emitted.join("")).toBe("naïve 😀? ");
    expect(r.stopped).toBe(true);
  });
});
