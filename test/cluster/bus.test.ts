// The control bus contract against the in-process bus and a real nats-server: wildcards, queue groups (one
// delivery per group), request/reply, and group formation (the leader hands its payload to every rank).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ControlBus, MemoryBus, subjectMatches } from "../../services/cluster/bus.js";
import { clusterConfigFromEnv } from "../../services/cluster/config.js";
import { hostFormation, joinFormation } from "../../services/cluster/formation.js";
import { NatsBus } from "../../services/cluster/nats-bus.js";
import { type ServerProcess, startNats } from "../helpers/servers.js";

const settle = () => new Promise((r) => setTimeout(r, 100));

it("matches subjects like NATS", () => {
  expect(subjectMatches("a.*.c", "a.b.c")).toBe(true);
  expect(subjectMatches("a.*", "a.b.c")).toBe(false);
  expect(subjectMatches("a.>", "a.b.c")).toBe(true);
  expect(subjectMatches("a.>", "a")).toBe(false);
  expect(subjectMatches("a.b", "a.b")).toBe(true);
});

function contract(name: string, make: () => Promise<[ControlBus, ControlBus]>) {
  describe(`${name} bus`, () => {
    let a: ControlBus;
    let b: ControlBus;
    beforeAll(async () => {
      [a, b] = await make();
    });
    afterAll(async () => {
      await a.close();
      await b.close();
    });

    it("delivers to wildcard subscribers and once per queue group", async () => {
      const all: string[] = [];
      const queued: string[] = [];
      const off = [
        b.subscribe("t.x.*", (d, s) => all.push(`${s}:${(d as { n: number }).n}`)),
        a.subscribe("t.x.>", (d) => queued.push(`a${(d as { n: number }).n}`), { queue: "q" }),
        b.subscribe("t.x.>", (d) => queued.push(`b${(d as { n: number }).n}`), { queue: "q" }),
      ];
      await settle();
      for (let n = 0; n < 6; n++) a.publish(`t.x.${n % 2 ? "odd" : "even"}`, { n });
      await settle();
      expect(all.sort()).toEqual(["t.x.even:0", "t.x.even:2", "t.x.even:4", "t.x.odd:1", "t.x.odd:3", "t.x.odd:5"]);
      expect(queued.map((x) => Number(x.slice(1))).sort()).toEqual([0, 1, 2, 3, 4, 5]);
      for (const f of off) f();
    });

    it("answers requests, and rejects when nobody answers", async () => {
      const off = b.subscribe("t.echo", (d, _s, reply) => reply?.({ got: d }));
      await settle();
      expect(await a.request("t.echo", { hi: 1 }, 1000)).toEqual({ got: { hi: 1 } });
      off();
      await settle();
      await expect(a.request("t.none", {}, 300)).rejects.toThrow();
    });

    it("forms a group: every rank gets the leader's payload, the leader learns every rank", async () => {
      // Members may ask before the leader listens: they retry until it answers.
      const joins = [1, 2, 3].map((rank) => joinFormation(b, "c1", "tp0", rank, 4, { address: `w${rank}` }, 5000));
      await new Promise((r) => setTimeout(r, 200));
      const members = await hostFormation(a, "c1", "tp0", 4, { ncclId: "abc" }, 5000);
      expect(await Promise.all(joins)).toEqual([{ ncclId: "abc" }, { ncclId: "abc" }, { ncclId: "abc" }]);
      expect(members.map((m) => [m.rank, m.info["address"]])).toEqual([
        [1, "w1"],
        [2, "w2"],
        [3, "w3"],
      ]);
      const host = hostFormation(a, "c1", "tp1", 2, "x", 3000);
      await expect(joinFormation(b, "c1", "tp1", 5, 2, {}, 2000)).rejects.toThrow(/does not fit/);
      await joinFormation(b, "c1", "tp1", 1, 2, {}, 2000);
      await host;
      await expect(hostFormation(a, "c1", "tp2", 2, "x", 200)).rejects.toThrow(/ranks 1 did not join/);
    });
  });
}

contract("in-process", async () => {
  const bus = new MemoryBus();
  return [bus, bus];
});

let nats: ServerProcess | undefined;
contract("NATS", async () => {
  nats = await startNats();
  const cfg = clusterConfigFromEnv({ NATS_URL: nats.url });
  return [await NatsBus.connect(cfg, "a"), await NatsBus.connect(cfg, "b")];
});
afterAll(async () => nats?.stop());
