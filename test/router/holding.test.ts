// Holding (the router's --group-wait-ms queue): arrival order, release, expiry, and a second hold of the same item.
import { afterEach, describe, expect, it, vi } from "vitest";
import { Holding } from "../../services/router/holding.js";

afterEach(() => {
  vi.useRealTimers();
});

describe("Holding", () => {
  it("gives its items back in arrival order, each once, and expires none of them afterwards", () => {
    vi.useFakeTimers();
    const h = new Holding<string>(100);
    const expired: string[] = [];
    for (const x of ["a", "b", "c"]) h.hold(x, (i) => expired.push(i));
    expect(h.release("b")).toBe(true);
    expect(h.release("b")).toBe(false);
    expect(h.takeAll()).toEqual(["a", "c"]);
    expect(h.size).toBe(0);
    vi.advanceTimersByTime(1000);
    expect(expired).toEqual([]);
  });

  it("expires an item after its wait, and a second hold starts the wait again without a stale expiry", () => {
    vi.useFakeTimers();
    const h = new Holding<string>(100);
    const expired: string[] = [];
    h.hold("a", (i) => expired.push(i));
    vi.advanceTimersByTime(60);
    h.hold("a", (i) => expired.push(`${i} again`));
    vi.advanceTimersByTime(60); // the first wait would have ended here
    expect(expired).toEqual([]);
    expect(h.size).toBe(1);
    vi.advanceTimersByTime(50);
    expect(expired).toEqual(["a again"]);
    expect(h.size).toBe(0);
  });
});
