// The source state a benchmark result was measured on (written into every results JSON).
import { execSync } from "node:child_process";
import { packageRoot } from "../services/common/paths.js";

function sh(cmd: string): string {
  try {
    return execSync(cmd, { cwd: packageRoot(), stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
  } catch {
    return "";
  }
}

/** HEAD's commit ("" outside a git checkout) and whether the working tree has uncommitted changes. */
export function gitState(): { commit: string; dirty: boolean } {
  return { commit: sh("git rev-parse HEAD"), dirty: sh("git status --porcelain") !== "" };
}
