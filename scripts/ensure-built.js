// Builds what is missing or stale before `npm start`, `npm test` and the benchmarks: the native addon (cmake-js)
// and the TypeScript output (tsc). Quiet when everything is up to date.
import { execSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const run = (cmd) => execSync(cmd, { cwd: root, stdio: "inherit" });

function newest(dir, exts) {
  let t = 0;
  if (!existsSync(dir)) return t;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name === "node_modules" || e.name === "build" || e.name === "generated") continue;
      t = Math.max(t, newest(p, exts));
    } else if (exts.some((x) => e.name.endsWith(x))) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

const addon = join(root, "native", "build", "Release", "tpserve_native.node");
const nativeSrc = Math.max(newest(join(root, "native"), [".cc", ".h", ".cu", ".cuh", "CMakeLists.txt"]));
if (!existsSync(addon) || statSync(addon).mtimeMs < nativeSrc) {
  console.error("[tpserve] building the native addon (cmake-js)...");
  run("npm run --silent build:native");
}
const distMain = join(root, "dist", "services", "cli", "main.js");
const tsSrc = Math.max(...["services", "bench", "native", "test"].map((d) => newest(join(root, d), [".ts"])));
if (!existsSync(distMain) || statSync(distMain).mtimeMs < tsSrc) {
  console.error("[tpserve] compiling TypeScript...");
  run("npm run --silent build:ts");
}
