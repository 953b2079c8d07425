import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { tempDir } from "./tempDirs";

/** Runs Debian's promtool (package prometheus; scripts/ensure-tools.sh, run by npm test, installs it). Missing is an error, never a skip. */
export function promtool(...args: string[]): { ok: boolean; output: string } {
    const run = spawnSync("promtool", args, { encoding: "utf8" });
    if (run.error) throw new Error(`promtool could not run (${run.error.message}): install Debian's prometheus package`);
    return { ok: run.status === 0, output: `${run.stdout}${run.stderr}` };
}

/** Writes files into a fresh directory and returns their paths by name. */
export function writeFiles<K extends string>(files: Record<K, string>): Record<K, string> {
    const dir = tempDir("openclaw-monitoring");
    return Object.fromEntries(
        Object.entries<string>(files).map(([name, content]) => {
            const file = path.join(dir, name);
            writeFileSync(file, content);
            return [name, file];
        }),
    ) as Record<K, string>;
}
