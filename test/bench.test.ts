// The benchmark's quick mode: every scenario still runs end to end. It asserts nothing about speed.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "./support/mockStack";

const tools = ["wrk", "nginx"].filter((tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0);
if (tools.length > 0 && process.env.CI) throw new Error(`CI=true but the benchmark's tools are missing: ${tools.join(", ")}`);

describe.skipIf(tools.length > 0)("npm run bench -- --quick", () => {
    it("runs every scenario and writes the report", () => {
        const out = path.join(mkdtempSync(path.join(tmpdir(), "bench-")), "results.md");
        const run = spawnSync(path.join(REPO_ROOT, "node_modules", ".bin", "tsx"), [path.join(REPO_ROOT, "bench", "run.mts"), "--quick", "--out", out], { encoding: "utf8", timeout: 120_000 });
        expect(run.status, run.stderr).toBe(0);
        const report = readFileSync(out, "utf8");
        for (const section of ["Added latency over direct", "Throughput per core", "Streaming", "Memory with open streams", "CPU per streamed MB", "EgressGateway", "Against the targets"]) {
            expect(report).toContain(`## ${section}`);
        }
        expect(report).toMatch(/\| KeyProxy \| [\d.]+ \/ [\d.]+ \|/);
        expect(report).not.toContain("NaN");
    }, 150_000);
});
