// Once per vitest run: every test file's temp dir, and every process the tests start, lives under one fresh
// directory in os.tmpdir(); the run fails if anything is left in it at the end, and removes it either way.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { removeCheckingEmpty } from "./tempDirs";

export default function setup() {
    const parent = tmpdir();
    const root = mkdtempSync(path.join(parent, "openclaw-test-"));
    process.env.TMPDIR = root;
    return () => {
        process.env.TMPDIR = parent;
        removeCheckingEmpty(root, "the test run");
    };
}
