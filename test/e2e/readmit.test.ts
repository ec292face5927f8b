// A static worker (`tpserve router --workers`, and what `tpserve serve` runs) whose process dies and comes back on
// the same port: while it is gone the router says NOT_SERVING and requests get UNAVAILABLE; a worker that serves
// there with another block size is refused (an error in the router's log), and one with the router's model is put
// back in service (a fresh group at the worker's epoch) and gives the golden greedy ids. Real worker processes, an
// in-process router.
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { generate } from "../../services/common/client.js";
import { greedyGoldenIds, loadGolden } from "../helpers/golden.js";
import { probe } from "../helpers/health.js";
import { logSink } from "../helpers/log-sink.js";
import { routerOver } from "../helpers/moved-requests.js";
import { waitFor } from "../helpers/multi-router.js";
import { killOutOfService, restartFixture } from "../helpers/worker-restarts.js";

const golden = loadGolden().golden;
const fx = restartFixture();
const worker = fx.worker;

describe("a static worker that serves again on the same port", () => {
  it("is refused with another block size, and put back in service with the router's model", async () => {
    const logs = logSink();
    const logged = (re: RegExp) => logs.lines.some((l) => re.test(String(l["msg"])));
    const first = await worker();
    const port = first.address.split(":").pop()!;
    const { router: r } = await routerOver([first.address], logs.stream);
    const client = fx.use(r);

    await killOutOfService(first, r);
    expect(await probe(r.address, "")).toBe("NOT_SERVING");
    const refused = (await generate(client, { text: "Hello", maxTokens: 4 }).catch((e) => e)) as grpc.ServiceError;
    expect(refused.code).toBe(grpc.status.UNAVAILABLE);

    const other = await worker(["--worker-port", port, "--block-size", "32"]);
    await waitFor(() => logged(/serves again, but its block size is 32, the router's 16/), "the refusal", 20_000);
    expect(r.router.healthy).toBe(false);
    other.child.kill("SIGKILL");
    await other.exited;

    await worker(["--worker-port", port]);
    // The router's health watch opens again at most 2 s after it ended, and sees the new worker SERVING.
    await waitFor(() => r.router.healthy, "the router to put the worker back in service", 10_000);
    expect(await probe(r.address, "")).toBe("SERVING");
    expect(await greedyGoldenIds(client)).toEqual(golden.map((g) => g.greedy_ids));
    expect(logged(new RegExp(`worker 127\\.0\\.0\\.1:${port} serving again: back in service at epoch 1`))).toBe(true);
    expect((await r.router.metrics.readmissions.get()).values[0]?.value).toBe(1);
    expect(r.router.groups).toHaveLength(1);
  }, 60_000);
});
