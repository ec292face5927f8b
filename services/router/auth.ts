// API keys for the public APIs: `authorization: Bearer <key>` as gRPC metadata or HTTP header. Keys come from a file
// (one per line, # comments) and/or TPSERVE_API_KEYS (comma-separated), read once at start. Comparison is constant
// time (SHA-256 digests compared with timingSafeEqual, every key checked).
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { ConfigError } from "../common/errors.js";

export class ApiKeys {
  private readonly digests: Buffer[];

  constructor(keys: readonly string[]) {
    this.digests = keys.map((k) => createHash("sha256").update(k).digest());
  }

  /** Reads keys from `file` (if given) and the comma-separated `envValue`; none at all means auth is off. */
  static load(file: string | undefined, envValue: string | undefined): ApiKeys | null {
    const keys: string[] = [];
    if (file) {
      let text: string;
      try {
        text = readFileSync(file, "utf8");
      } catch (e) {
        throw new ConfigError(`--api-keys-file ${file} cannot be read: ${(e as Error).message}`);
      }
      for (const line of text.split("\n")) {
        const k = line.trim();
        if (k && !k.startsWith("#")) keys.push(k);
      }
      if (keys.length === 0) throw new ConfigError(`--api-keys-file ${file} holds no key (one key per line)`);
    }
    for (const k of (envValue ?? "").split(",")) if (k.trim()) keys.push(k.trim());
    return keys.length > 0 ? new ApiKeys(keys) : null;
  }

  /** Whether an `authorization` value ("Bearer <key>") carries a known key. */
  allows(authorization: string | undefined): boolean {
    const m = /^Bearer\s+(.+)$/i.exec(authorization?.trim() ?? "");
    const candidate = createHash("sha256")
      .update(m?.[1] ?? "")
      .digest();
    let ok = false;
    for (const d of this.digests) ok = timingSafeEqual(d, candidate) || ok;
    return ok && m !== null;
  }
}

export const AUTH_HINT = "send `authorization: Bearer <key>` with a key from --api-keys-file or TPSERVE_API_KEYS";
