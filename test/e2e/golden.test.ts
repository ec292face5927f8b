// Golden references through the whole stack: greedy ids over gRPC streaming equal Hugging Face's, unquantized
// and with int4 round-to-nearest (g128, symmetric).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate } from "../../services/common/client.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";
import { greedyGoldenIds, loadGolden } from "../helpers/golden.js";

const golden = loadGolden().golden;

describe.each([
  { quantization: "none" as const, key: "greedy_ids" as const },
  { quantization: "int4" as const, key: "rtn_int4_g128_sym_greedy_ids" as const },
])("golden greedy ids over gRPC, quantization $quantization", ({ quantization, key }) => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster({ quantization, groupSize: 128, symmetric: true });
  });
  afterAll(async () => c?.close());

  it.each(golden.map((g, i) => [i, g] as const))("prompt %i from text", async (_i, g) => {
    const out = await generate(c.client, { text: g.prompt, maxTokens: 32, ignoreEos: true });
    expect(out.promptTokens).toBe(g.prompt_ids.length);
    expect(out.ids).toEqual(g[key]);
    expect(out.finishReason).toBe("FINISH_REASON_LENGTH");
    if (quantization === "none") expect(out.text).toBe(g.text);
  });

  it("prompt 0 from token ids, all six at once", async () => {
    const outs = await greedyGoldenIds(c.client);
    for (const [i, ids] of outs.entries()) expect(ids).toEqual(golden[i]![key]);
  });
});
