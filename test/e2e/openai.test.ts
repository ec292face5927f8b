// The OpenAI-compatible HTTP API, driven by the official `openai` npm client, unchanged.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate } from "../../services/common/client.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";
import { loadGolden } from "../helpers/golden.js";

const golden = loadGolden().golden;

describe("OpenAI-compatible API", () => {
  let c: Cluster;
  let openai: OpenAI;
  let base: string;
  beforeAll(async () => {
    c = await startCluster({}, { decodeSteps: 2 });
    base = `http://127.0.0.1:${c.router.httpPort}/v1`;
    openai = new OpenAI({ apiKey: "unused", baseURL: base, maxRetries: 0 });
  });
  afterAll(async () => c?.close());

  it("lists the model", async () => {
    const models = await openai.models.list();
    expect(models.data.map((m) => m.id)).toEqual(["tinyllama-brown"]);
  });

  it("completions: greedy output equals the gRPC API's, with usage and finish reason", async () => {
    const g = golden[0]!;
    const r = await openai.completions.create({
      model: "tinyllama-brown",
      prompt: g.prompt,
      max_tokens: 32,
      temperature: 0,
    });
    expect(r.choices[0]!.text).toBe(g.text);
    expect(r.choices[0]!.finish_reason).toBe("length");
    expect(r.usage).toEqual({
      prompt_tokens: g.prompt_ids.length,
      completion_tokens: 32,
      total_tokens: g.prompt_ids.length + 32,
    });
    const viaGrpc = await generate(c.client, { text: g.prompt, maxTokens: 32 });
    expect(r.choices[0]!.text).toBe(viaGrpc.text);
  });

  it("completions stream as server-sent events ending in [DONE], usage in the last chunk", async () => {
    const g = golden[2]!;
    const stream = await openai.completions.create({
      model: "tinyllama-brown",
      prompt: g.prompt,
      max_tokens: 32,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: { completion_tokens: number } | undefined;
    let chunks = 0;
    for await (const ch of stream) {
      chunks++;
      text += ch.choices[0]?.text ?? "";
      finish = ch.choices[0]?.finish_reason ?? finish;
      if (ch.usage) usage = ch.usage;
    }
    expect(chunks).toBeGreaterThan(5);
    expect(text).toBe(g.text);
    expect(finish).toBe("length");
    expect(usage?.completion_tokens).toBe(32);
    // Raw framing: every event is `data: <json>\n\n` and the stream ends with `data: [DONE]`.
    const raw = await fetch(`${base}/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: g.prompt, max_tokens: 4, temperature: 0, stream: true }),
    });
    expect(raw.headers.get("content-type")).toBe("text/event-stream");
    const body = await raw.text();
    expect(body.endsWith("data: [DONE]\n\n")).toBe(true);
    for (const ev of body.split("\n\n").filter(Boolean)) expect(ev.startsWith("data: ")).toBe(true);
  });

  it("chat completions, plain and streamed, render the model's chat template", async () => {
    const messages = [{ role: "user" as const, content: "The committee said that" }];
    const r = await openai.chat.completions.create({
      model: "tinyllama-brown",
      messages,
      max_tokens: 12,
      temperature: 0,
    });
    const viaGrpc = await generate(c.client, { text: "user: The committee said that\nassistant:", maxTokens: 12 });
    expect(r.choices[0]!.message.role).toBe("assistant");
    expect(r.choices[0]!.message.content).toBe(viaGrpc.text);
    expect(r.choices[0]!.finish_reason).toBe("length");
    const stream = await openai.chat.completions.create({
      model: "tinyllama-brown",
      messages,
      max_tokens: 12,
      temperature: 0,
      stream: true,
    });
    let content = "";
    let role: string | undefined;
    let finish: string | null = null;
    for await (const ch of stream) {
      role ??= ch.choices[0]?.delta.role;
      content += ch.choices[0]?.delta.content ?? "";
      finish = ch.choices[0]?.finish_reason ?? finish;
    }
    expect(role).toBe("assistant");
    expect(content).toBe(viaGrpc.text);
    expect(finish).toBe("length");
  });

  it("errors have OpenAI's shape and status codes", async () => {
    await expect(
      openai.completions.create({ model: "tinyllama-brown", prompt: "Hi", max_tokens: 0 }),
    ).rejects.toMatchObject({ status: 400, error: { message: expect.stringMatching(/max_tokens must be >= 1/) } });
    await expect(openai.completions.create({ model: "gpt-9", prompt: "Hi" })).rejects.toMatchObject({ status: 404 });
    await expect(
      openai.chat.completions.create({ model: "tinyllama-brown", messages: [], max_tokens: 3 }),
    ).rejects.toMatchObject({ status: 400 });
    const bad = await fetch(`${base}/completions`, { method: "POST", body: "{not json" });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/not valid JSON/);
  });
});
