// `tpserve router`: a router alone, finding its worker groups in the cluster ledger (REDIS_URL) or given them
// with --workers. `tpserve worker --group NAME` (serve.ts) is the other half of a cluster.
import type { Flags } from "../common/flags.js";
import { routerConfigFromFlags } from "../router/config.js";
import { startRouter } from "../router/main.js";

export async function routerCommand(f: Flags): Promise<number> {
  const workers = (f.string("workers") ?? "").split(",").filter((w) => w.length > 0);
  const cfg = routerConfigFromFlags(f, workers);
  f.rejectUnknown();
  const handle = await startRouter(cfg);
  const ready = { type: "ready", address: handle.address, routerId: handle.cluster?.routerId ?? null };
  if (process.send) process.send(ready);
  console.error(
    `tpserve router on ${handle.address}` +
      (handle.cluster ? ` (cluster ${cfg.cluster.cluster}, router id ${handle.cluster.routerId})` : ""),
  );
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", () => resolve());
    process.once("SIGINT", () => resolve());
  });
  await handle.close(10_000);
  if (process.connected) process.disconnect();
  return 0;
}
