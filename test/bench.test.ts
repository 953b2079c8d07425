// The benchmark's quick mode: every scenario still runs end to end, and the run cleans up after itself (no
// process outlives it, nothing is left in the temp dir, the committed results stay as they are). It asserts
// nothing about speed.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "./support/mockStack";
import { waitUntil } from "./support/processes";

const TSX = path.join(REPO_ROOT, "node_modules", ".bin", "tsx");
const BENCH = path.join(REPO_ROOT, "bench", "run.mts");
const RESULTS = path.join(REPO_ROOT, "bench", "results.md");

const missing = ["wrk", "nginx"].filter((tool) => spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0);

/** Whether any process is left in the process group `pgid`. */
function groupAlive(pgid: number): boolean {
    try {
        process.kill(-pgid, 0);
        return true;
    } catch {
        return false;
    }
}

const groups: number[] = [];
afterAll(() => {
    for (const pgid of groups) if (groupAlive(pgid)) process.kill(-pgid, "SIGKILL");
});

/**
 * Runs the benchmark as the leader of its own process group, so every process it starts (and any it orphans)
 * is found by that group. Resolves when the benchmark itself exits, not when its pipes close.
 */
async function bench(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string; pgid: number }> {
    const child: ChildProcess = spawn(TSX, [BENCH, ...args], { detached: true, stdio: ["ignore", "pipe", "pipe"] });
    groups.push(child.pid!);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk) => (stdout += chunk));
    child.stderr!.on("data", (chunk) => (stderr += chunk));
    const timer = setTimeout(() => process.kill(-child.pid!, "SIGKILL"), timeoutMs);
    const [code] = await once(child, "exit");
    clearTimeout(timer);
    return { code, stdout, stderr, pgid: child.pid! };
}

describe("npm run bench", () => {
    it("--help prints the usage and runs nothing", async () => {
        const run = await bench(["--help"], 20_000);
        expect(run.code).toBe(0);
        expect(run.stdout).toMatch(/^usage: npm run bench/);
        expect(run.stdout).toContain("--quick");
        expect(run.stderr).not.toContain("[bench");
    });

    it.each([[["--frobnicate"], /unknown argument --frobnicate/], [["--quick", "--out"], /--out needs a file/]])("%j is a usage error", async (args, message) => {
        const run = await bench(args, 20_000);
        expect(run.code).toBe(2);
        expect(run.stderr).toMatch(message);
        expect(run.stderr).toContain("usage: npm run bench");
    });

    it("--quick runs every scenario, reports on stdout, leaves bench/results.md, the temp dir and no process behind", async () => {
        if (missing.length > 0) throw new Error(`the benchmark needs ${missing.join(", ")}: npm test installs them (scripts/ensure-tools.sh)`);
        const committed = { text: readFileSync(RESULTS, "utf8"), mtime: statSync(RESULTS).mtimeMs };
        const before = readdirSync(tmpdir());
        const run = await bench(["--quick"], 100_000);
        expect(run.code, run.stderr).toBe(0);
        const report = run.stdout;
        expect(report).toMatch(/^# Benchmark results \(quick mode/);
        for (const section of ["Added latency over direct", "Throughput per core", "Streaming", "Memory with open streams", "CPU per streamed MB", "EgressGateway", "Against the targets"]) {
            expect(report).toContain(`## ${section}`);
        }
        expect(report).toMatch(/\| KeyProxy \| [\d.]+ \/ [\d.]+ \|/);
        expect(report).not.toContain("NaN");

        expect(readFileSync(RESULTS, "utf8")).toBe(committed.text);
        expect(statSync(RESULTS).mtimeMs).toBe(committed.mtime);
        // tsx keeps its own cache dir there (tsx-<uid>); the benchmark's work and PKI dirs must be gone.
        expect(readdirSync(tmpdir()).filter((entry) => !before.includes(entry) && !/^tsx-\d+$/.test(entry))).toEqual([]);
        await waitUntil(() => !groupAlive(run.pgid), "every process the benchmark started to exit", 10_000, 100).catch(() => {
            throw new Error(`processes outlived the benchmark: ${spawnSync("pgrep", ["-a", "-g", String(run.pgid)], { encoding: "utf8" }).stdout}`);
        });
    }, 120_000);
});
