// Command-line flags: `--name value`, `--name=value` and boolean `--name`. Read once, then typed getters that
// validate and name the flag in every error.
import { ConfigError } from "./errors.js";

export class Flags {
  private readonly values = new Map<string, string | true>();
  private readonly used = new Set<string>();
  readonly positional: string[] = [];

  constructor(argv: readonly string[], booleans: readonly string[] = []) {
    const bools = new Set(booleans);
    for (let i = 0; i < argv.length; i++) {
      const arg = argv[i]!;
      if (!arg.startsWith("--")) {
        this.positional.push(arg);
        continue;
      }
      const eq = arg.indexOf("=");
      if (eq > 0) {
        this.values.set(arg.slice(2, eq), arg.slice(eq + 1));
        continue;
      }
      const name = arg.slice(2);
      const next = argv[i + 1];
      if (bools.has(name) || next === undefined || next.startsWith("--")) {
        this.values.set(name, true);
      } else {
        this.values.set(name, next);
        i++;
      }
    }
  }

  has(name: string): boolean {
    this.used.add(name);
    return this.values.has(name);
  }

  string(name: string, fallback: string): string;
  string(name: string): string | undefined;
  string(name: string, fallback?: string): string | undefined {
    this.used.add(name);
    const v = this.values.get(name);
    if (v === true) throw new ConfigError(`--${name} needs a value`);
    return v ?? fallback;
  }

  bool(name: string): boolean {
    this.used.add(name);
    const v = this.values.get(name);
    if (v === undefined) return false;
    if (v === true || v === "true" || v === "1") return true;
    if (v === "false" || v === "0") return false;
    throw new ConfigError(`--${name} takes no value (or true/false), got "${v}"`);
  }

  int(name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
    const raw = this.string(name);
    if (raw === undefined) return fallback;
    const v = Number(raw);
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new ConfigError(`--${name} must be an integer in ${min}..${max}, got "${raw}"`);
    }
    return v;
  }

  float(name: string, fallback: number, min: number, max: number): number {
    const raw = this.string(name);
    if (raw === undefined) return fallback;
    const v = Number(raw);
    if (!Number.isFinite(v) || v < min || v > max) {
      throw new ConfigError(`--${name} must be a number in ${min}..${max}, got "${raw}"`);
    }
    return v;
  }

  choice<T extends string>(name: string, choices: readonly T[], fallback: T): T {
    const raw = this.string(name);
    if (raw === undefined) return fallback;
    if (!(choices as readonly string[]).includes(raw)) {
      throw new ConfigError(`--${name} must be one of ${choices.join("|")}, got "${raw}"`);
    }
    return raw as T;
  }

  /** Throws on flags nobody asked for (typos), naming them. */
  rejectUnknown(): void {
    const unknown = [...this.values.keys()].filter((k) => !this.used.has(k));
    if (unknown.length > 0) throw new ConfigError(`unknown option(s): ${unknown.map((k) => "--" + k).join(", ")}`);
  }
}
