// The six golden prompts as streams through a router with two worker groups, one of which the test then takes down:
// which of them the doomed group holds and how far they got, and the check that each ended with its golden ids.
import type { DestinationStream } from "pino";
import { expect } from "vitest";
import { type GenerateOutcome, generate } from "../../services/common/client.js";
import { Flags } from "../../services/common/flags.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import { routerConfigFromFlags } from "../../services/router/config.js";
import type { WorkerGroup } from "../../services/router/group.js";
import { type RouterHandle, startRouter } from "../../services/router/main.js";
import { loadGolden } from "./golden.js";

const golden = loadGolden().golden;
export const GOLDEN_TOKENS = 32;

/**
 * An in-process router (no HTTP; silent, or info logs into `logStream`) over `workers`, and its group of the first of
 * them, the one to take down.
 */
export async function routerOver(
  workers: string[],
  logStream?: DestinationStream,
): Promise<{ router: RouterHandle; first: WorkerGroup }> {
  const cfg = { ...routerConfigFromFlags(new Flags([]), workers), workers, port: 0, httpPort: 0 };
  const router = logStream
    ? await startRouter({ ...cfg, logLevel: "info" }, { logStream })
    : await startRouter({ ...cfg, logLevel: "silent" });
  const port = workers[0]!.split(":").pop()!;
  return { router, first: router.router.groups.find((g) => g.name.includes(port))! };
}

/** Every golden prompt (32 tokens, EOS ignored), sent at once; a failed stream resolves to its error. */
export function startGoldenStreams(client: GenerationClient): Promise<GenerateOutcome | Error>[] {
  return golden.map((g) =>
    generate(client, { tokenIds: { ids: g.prompt_ids }, maxTokens: GOLDEN_TOKENS, ignoreEos: true }).catch(
      (e: Error) => e,
    ),
  );
}

/**
 * Tokens each golden prompt has generated in `group` so far (0 where the group does not hold it). Sequence ids are
 * 1..6 in submission order; a group's scheduler holds the sequences it runs, with their tokens.
 */
export function generatedIn(group: WorkerGroup): number[] {
  return golden.map((g, i) => {
    const s = group.scheduler.get(i + 1);
    return s ? s.tokens.length - g.prompt_ids.length : 0;
  });
}

/** Waits (up to 20 s) until one of `group`'s golden sequences has streamed a token. */
export async function untilOneStreamed(group: WorkerGroup): Promise<void> {
  const t0 = Date.now();
  while (!generatedIn(group).some((n) => n > 0) && Date.now() - t0 < 20_000) await new Promise((r) => setImmediate(r));
}

/** How many of `group`'s golden sequences are midway (some tokens streamed, not all). */
export function midwayIn(group: WorkerGroup): number {
  return generatedIn(group).filter((n) => n > 0 && n < GOLDEN_TOKENS).length;
}

/** Every stream ended with its golden greedy ids and all 32 tokens. */
export async function expectGoldenEnds(outcomes: Promise<GenerateOutcome | Error>[]): Promise<void> {
  for (const [i, r] of (await Promise.all(outcomes)).entries()) {
    if (r instanceof Error) throw new Error(`prompt ${i} failed: ${r.message}`);
    expect(r.ids, `prompt ${i}`).toEqual(golden[i]!.greedy_ids);
    expect(r.completionTokens, `prompt ${i}`).toBe(GOLDEN_TOKENS);
  }
}
