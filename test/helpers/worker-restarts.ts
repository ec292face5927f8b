// Tests whose worker processes die and come back behind one in-process router (readmit, group-wait): the processes,
// the router and its client, all stopped after each test.
import { afterEach } from "vitest";
import { generationClient } from "../../services/common/client.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import type { RouterHandle } from "../../services/router/main.js";
import { waitFor } from "./multi-router.js";
import { killAll, type Proc, startWorkerProcess } from "./procs.js";

export interface RestartFixture {
  /** `tpserve worker` on a free port (or `--worker-port P` in `extra`), stopped after the test. */
  worker(extra?: string[]): Promise<Proc>;
  /** The test's router (closed after it) and a client of it. */
  use(router: RouterHandle): GenerationClient;
}

/** Registers the afterEach that stops what a test started through the fixture. */
export function restartFixture(): RestartFixture {
  const procs: Proc[] = [];
  let router: RouterHandle | undefined;
  let client: GenerationClient | undefined;
  afterEach(async () => {
    client?.close();
    await router?.close();
    router = client = undefined;
    killAll(procs);
  });
  return {
    async worker(extra = []) {
      const p = await startWorkerProcess(extra);
      procs.push(p);
      return p;
    },
    use(r) {
      router = r;
      client = generationClient(r.address);
      return client;
    },
  };
}

/** SIGKILL to `p`; resolves once it exited and `router` has no group in service. */
export async function killOutOfService(p: Proc, router: RouterHandle): Promise<void> {
  p.child.kill("SIGKILL");
  await p.exited;
  await waitFor(() => !router.router.healthy, "the router to take the group out of service", 5000);
}
