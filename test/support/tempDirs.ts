// Temporary directories for the tests and the benchmark: made under os.tmpdir(), removed when their user is done.
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const made = new Set<string>();

/** A fresh directory under os.tmpdir(). removeTempDirs() removes it: test/support/setup.ts does after every test file. */
export function tempDir(prefix: string): string {
    const dir = mkdtempSync(path.join(tmpdir(), `${prefix}-`));
    made.add(dir);
    return dir;
}

export function removeTempDirs(): void {
    for (const dir of made) rmSync(dir, { recursive: true, force: true });
    made.clear();
}

/**
 * What tools make for themselves in the temp dir and may keep: tsx's cache and IPC directory (`tsx-<uid>`), and
 * Node's module compile cache (`node-compile-cache`, made by a tool that enables it, seen from the e2e file).
 */
const TOOL_ENTRY = /^(tsx-\d+|node-compile-cache)$/;

/**
 * Removes `dir` (a temp dir of one test run or test file) and throws naming what was left in it, other than
 * tools' own entries: whatever made those must remove them itself.
 */
export function removeCheckingEmpty(dir: string, owner: string): void {
    const left = readdirSync(dir).filter((entry) => !TOOL_ENTRY.test(entry));
    rmSync(dir, { recursive: true, force: true });
    if (left.length > 0) {
        throw new Error(`${owner} left ${left.join(", ")} in the temp dir: remove it when done (test/support/tempDirs.ts tempDir() does)`);
    }
}
