// `tpserve router`'s worker source: static flags without REDIS_URL, the ledger (and no static flags) with it; and
// the worker's --advertise-host, the address a group registers in the ledger.
import { describe, expect, it } from "vitest";
import { ROUTER_BOOLEAN_FLAGS, workerSourceFromFlags } from "../../services/cli/router.js";
import { Flags } from "../../services/common/flags.js";
import { dialAddress, workerConfigFromFlags } from "../../services/worker/config.js";

const router = (args: string[], clustered: boolean) =>
  workerSourceFromFlags(new Flags(args, ROUTER_BOOLEAN_FLAGS), clustered);

describe("tpserve router worker source", () => {
  it("needs --workers or --workers-dns without REDIS_URL", () => {
    expect(() => router([], false)).toThrow(/needs --workers HOST:PORT.*or REDIS_URL/);
    expect(router(["--workers-dns", "w:1", "--min-workers", "3"], false)).toMatchObject({ minWorkers: 3 });
  });

  it("takes groups from the ledger with REDIS_URL and refuses the static flags there", () => {
    expect(router(["--workers-wait-s", "90"], true)).toMatchObject({ waitMs: 90_000, workers: undefined });
    expect(() => router(["--workers", "a:1"], true)).toThrow(/--workers is not used with REDIS_URL.*drop the flag/);
    expect(() => router(["--workers-dns", "w:1"], true)).toThrow(/--workers-dns is not used with REDIS_URL/);
    expect(() => router(["--min-workers", "2"], true)).toThrow(/--min-workers is for --workers-dns/);
  });
});

describe("tpserve worker --advertise-host", () => {
  const worker = (args: string[]) => workerConfigFromFlags(new Flags(args, ["asym"]));

  it("is the host a registered group is dialed at; a wildcard address is refused", () => {
    expect(worker([]).advertiseHost).toBeNull();
    expect(worker(["--advertise-host", "10.1.2.3"]).advertiseHost).toBe("10.1.2.3");
    expect(() => worker(["--advertise-host", "0.0.0.0"])).toThrow(/--advertise-host must be a host name or IP/);
    expect(() => worker(["--advertise-host", "a b"])).toThrow(/--advertise-host/);
    expect(() => worker(["--group", "g", "--worker-host", "0.0.0.0"])).toThrow(/needs --advertise-host HOST/);
    expect(worker(["--group", "g", "--worker-host", "0.0.0.0", "--advertise-host", "h"]).group).toBe("g");
    expect(dialAddress("10.1.2.3", 50061)).toBe("10.1.2.3:50061");
    expect(dialAddress("fd00::7", 50061)).toBe("[fd00::7]:50061");
  });
});
