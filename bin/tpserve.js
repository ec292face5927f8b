#!/usr/bin/env node
// Entry point of the `tpserve` command: runs the compiled CLI from dist/.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const main = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "services", "cli", "main.js");
if (!existsSync(main)) {
  console.error("tpserve is not built: run `npm run build` (or `npm start`, which builds first)");
  process.exit(1);
}
const { run } = await import(main);
process.exitCode = await run(process.argv.slice(2));
