// The `tpserve` command: serve, generate, eval ppl, and the internal worker entry.

import { CLUSTER_ENV_HELP } from "../cluster/config.js";
import { TpserveError } from "../common/errors.js";
import { Flags } from "../common/flags.js";
import { ROUTER_FLAGS_HELP } from "../router/config.js";
import { WORKER_FLAGS_HELP } from "../worker/config.js";
import { evalCommand } from "./eval-command.js";
import { generateCommand } from "./generate.js";
import { QUANTIZE_HELP, quantizeCommand } from "./quantize.js";
import { ROUTER_BOOLEAN_FLAGS, ROUTER_COMMAND_HELP, routerCommand } from "./router.js";
import { serveCommand, workerCommand } from "./serve.js";

const HELP = `tpserve: tensor-parallel LLM serving

usage:
  tpserve serve [options]                 start router + worker on this machine (npm start)
  tpserve router [--workers H:P,...] [router options]
                                           the router alone (containers): static workers (--workers, --workers-dns)
                                           or, with REDIS_URL, the worker groups in the ledger; drains on SIGTERM
  tpserve worker [--group NAME] [worker options]
                                           one worker group alone (--tp N: all N ranks); --group registers
                                           it in the ledger (REDIS_URL), reached at --advertise-host
  tpserve generate --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--api-key K]
                   [--seed S] [--stop STR] [--address HOST:PORT] [--json]
                                          stream a completion from a running server
  tpserve eval ppl --text FILE [--window 512] [worker options]
                                          perplexity of a text file, printed as JSON
  tpserve eval choice [--items 300] [--seed 1] [worker options]
                                          multiple-choice next-word accuracy on the Brown test split
${QUANTIZE_HELP}

serve options:
  --no-demo                don't stream a sample completion once ready
${ROUTER_FLAGS_HELP}
${ROUTER_COMMAND_HELP}
${WORKER_FLAGS_HELP}
${CLUSTER_ENV_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case "serve":
        return await serveCommand(
          new Flags(rest, [
            "no-demo",
            "asym",
            "log-steps",
            "no-http",
            "auth-health-metrics",
            "log-prompts",
            "no-prefix-cache",
            "no-prefix-routing",
          ]),
        );
      case "router":
        return await routerCommand(new Flags(rest, ROUTER_BOOLEAN_FLAGS));
      case "worker":
        return await workerCommand(new Flags(rest, ["asym"]));
      case "generate":
        return await generateCommand(new Flags(rest, ["json", "ignore-eos"]));
      case "quantize":
        return await quantizeCommand(new Flags(rest, ["sym", "asym", "act-order", "static-groups"]));
      case "eval":
        return await evalCommand(new Flags(rest, ["asym"]));
      case undefined:
      case "help":
      case "--help":
      case "-h":
        console.log(HELP);
        return cmd === undefined ? 1 : 0;
      default:
        console.error(`tpserve: unknown command "${cmd}"\n\n${HELP}`);
        return 1;
    }
  } catch (err) {
    if (err instanceof TpserveError) {
      console.error(`tpserve ${cmd}: ${err.code}: ${err.message}`);
      return 2;
    }
    const e = err as { code?: unknown; message?: string; details?: string };
    if (typeof e.code === "number" && e.details !== undefined) {
      console.error(`tpserve ${cmd}: gRPC error ${e.code}: ${e.details}`);
      return 3;
    }
    if (typeof e.code === "string") {
      console.error(`tpserve ${cmd}: ${e.code}: ${e.message}`);
      return 2;
    }
    throw err;
  }
}
