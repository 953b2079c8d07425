// Runs before every test file (vitest setupFiles): the file gets its own os.tmpdir(), and fails if it leaves
// anything there once its own afterAll hooks have run (after hooks run in reverse order, so this one runs last).
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, expect } from "vitest";
import { removeCheckingEmpty, removeTempDirs } from "./tempDirs";

const parent = tmpdir();
const dir = mkdtempSync(path.join(parent, "file-"));
process.env.TMPDIR = dir;

afterAll(() => {
    removeTempDirs();
    process.env.TMPDIR = parent;
    removeCheckingEmpty(dir, expect.getState().testPath ?? "this test file");
});
