// Mixed-length greedy requests built from the golden prompts: prompts repeated 1-4 times, outputs of 4-40 tokens.
// `distinct` bounds how many different requests there are, so their solo runs stay few.
import { loadGolden } from "./golden.js";

export interface TestRequest {
  text: string;
  maxTokens: number;
  ignoreEos: boolean;
}

export function mixedRequests(n: number, distinct: number): TestRequest[] {
  const golden = loadGolden().golden;
  const kinds = Array.from({ length: distinct }, (_, i) => {
    const g = golden[i % golden.length]!;
    const text = Array.from({ length: 1 + (i % 4) }, () => g.prompt).join(" ");
    return { text, maxTokens: 4 + ((i * 13) % 37), ignoreEos: true };
  });
  return Array.from({ length: n }, (_, i) => kinds[(i * 5) % distinct]!);
}
