// Where the package's own files are, whether running from sources (tests) or from dist/.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "proto"))) {
      root = dir;
      return dir;
    }
    dir = dirname(dir);
  }
  throw new Error("package root not found above " + fileURLToPath(import.meta.url));
}

/** The model bundled with the package, served when no --model is given. */
export function bundledModelDir(): string {
  return join(packageRoot(), "models", "tinyllama-brown");
}
