// KeyProxy's metered hot path alone, this build against an earlier bundle, interleaved in one run: CPU-s per 10k
// requests at 100 concurrent (wrk), and optionally a CPU profile of each, summarised by area.
//   npm run bench:hotpath -- --baseline BUNDLE [--baseline-node-options=OPTIONS] [--rounds N] [--seconds S] [--profile]
// A few minutes at most; the full comparison with nginx, Portkey and the Node floor is bench/run.mts.
import { type ChildProcess, execFile, execFileSync } from "node:child_process";
import { once } from "node:events";
import { readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { credentialDigest } from "../proxy-image/src/policy.ts";
import { bundle } from "../scripts/images.mts";
import { auditDirSetting, cpuSeconds, percentile, processEnvOf, start as startProcess } from "./processes.mts";
import { removeTempDirs, tempDir } from "../test/support/tempDirs.ts";
import { testPki } from "../test/support/tls.ts";

const USAGE = "usage: npm run bench:hotpath -- --baseline BUNDLE [--baseline-node-options=OPTIONS] [--rounds N] [--seconds S] [--profile]";
const args = process.argv.slice(2);
const flag = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
};
const baselineBundle = flag("--baseline");
if (baselineBundle === undefined) {
    console.error(USAGE);
    process.exit(2);
}
const rounds = Number(flag("--rounds") ?? 3);
const seconds = Number(flag("--seconds") ?? 5);
const profile = args.includes("--profile");
/** The baseline's NODE_OPTIONS as its build deployed them (default: this build's). */
const baselineNodeOptions = args.find((arg) => arg.startsWith("--baseline-node-options="))?.slice("--baseline-node-options=".length) ?? processEnvOf("keyProxy").NODE_OPTIONS;

const ROOT = path.resolve(import.meta.dirname, "..");
const TOKEN = "ocp_benchbenchbenchbenchbenchbenchbenchbenchbenchbe";
const KEY = "bench-upstream-key";
const MESSAGE = JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 64, messages: [{ role: "user", content: "hi" }] });
const work = tempDir("openclaw-hotpath");
const children: ChildProcess[] = [];
process.on("exit", () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    removeTempDirs();
});

const pki = testPki();
const upstream = await startProcess(children, process.execPath, [path.join(ROOT, "bench", "upstream.mts"), path.join(pki.dir, "server.pem"), path.join(pki.dir, "server.key")], {}, (l) => typeof l.port === "number");

async function startKeyProxy(bundleFile: string, name: string) {
    const profileDir = path.join(work, `${name}-profile`);
    // The baseline as its own build deployed it: only its Node options; this build with its container's environment.
    const processEnv = name === "baseline" ? { NODE_OPTIONS: baselineNodeOptions } : processEnvOf("keyProxy");
    const env = {
        ...processEnv,
        NODE_OPTIONS: processEnv.NODE_OPTIONS + (profile ? ` --cpu-prof --cpu-prof-dir=${profileDir}` : ""),
        KEYPROXY_CONFIG: JSON.stringify({
            listen: { host: "127.0.0.1", port: 0 },
            admin: [{ host: "127.0.0.1", port: 0 }],
            upstreams: { anthropic: { baseUrl: `https://localhost:${upstream.line.port}` } },
            extraCaFile: pki.caFile,
            registryDir: path.join(work, `${name}-agents`),
            ...auditDirSetting(bundleFile, path.join(work, `${name}-audit`)),
            limits: { maxConcurrentPerAgent: 100_000, maxUpstreamConnections: 200 },
            metering: { ledgerFile: path.join(work, `${name}-ledger.log`) },
        }),
        KEYPROXY_KEY_ANTHROPIC: KEY,
    };
    execFileSync(process.execPath, [bundleFile, "register"], {
        input: JSON.stringify({ name: "bench", credentialSha256: credentialDigest(TOKEN), subnet: "127.0.0.0/8", budget: { totalUsd: 1_000_000 } }),
        env: { PATH: process.env.PATH, ...env },
    });
    // Every access line is read as it comes, so none queue in the pipe.
    const started = await startProcess(children, process.execPath, [bundleFile, "serve"], env, (l) => l.event === "listening");
    return { name, bundleFile, profileDir, port: started.line.port as number, child: started.child, requests: 0 };
}

const current = await startKeyProxy(await bundle("keyProxy"), "current");
const before = await startKeyProxy(path.resolve(baselineBundle), "baseline");
const script = path.join(work, "post.lua");
writeFileSync(script, `wrk.method = "POST"\nwrk.body = '${MESSAGE}'\nwrk.headers["x-api-key"] = "${TOKEN}"\nwrk.headers["content-type"] = "application/json"\n`);
const execFileAsync = promisify(execFile);

const per10k: Record<string, number[]> = { baseline: [], current: [] };
for (let round = 0; round < rounds; round++) {
    for (const target of [before, current]) {
        const cpuBefore = cpuSeconds([target.child.pid!]);
        const { stdout } = await execFileAsync("wrk", ["-t1", "-c100", `-d${seconds}s`, "-s", script, `http://127.0.0.1:${target.port}/anthropic/v1/messages`], { encoding: "utf8" });
        const cpu = cpuSeconds([target.child.pid!]) - cpuBefore;
        if (/Non-2xx/.test(stdout)) throw new Error(`${target.name}: failed responses\n${stdout}`);
        const requests = Number(/(\d+) requests in/.exec(stdout)![1]);
        per10k[target.name].push((cpu / requests) * 10_000);
        target.requests += requests;
        console.error(`round ${round + 1} ${target.name}: ${requests} requests, ${((cpu / requests) * 10_000).toFixed(3)} CPU-s per 10k`);
    }
}
const med = (values: number[]) => percentile(values, 0.5);
// The host's load moves between rounds more than the builds differ: the ratio within each round (both builds ran
// back to back) is the steadier figure.
const ratios = per10k.current.map((cpu, round) => per10k.baseline[round] / cpu);
console.log(`baseline ${med(per10k.baseline).toFixed(3)} CPU-s per 10k, current ${med(per10k.current).toFixed(3)} (medians); baseline over current within a round: median ${med(ratios).toFixed(2)}x (${ratios.map((r) => r.toFixed(2)).join(", ")})`);

if (profile) {
    for (const target of [before, current]) {
        const exited = once(target.child, "exit");
        target.child.kill("SIGTERM");
        await exited;
        // The largest profile is the server's (the `register` run before it leaves a small one).
        const file = readdirSync(target.profileDir).map((f) => path.join(target.profileDir, f)).sort((a, b) => statSync(b).size - statSync(a).size)[0];
        console.log(`\n${target.name}:`);
        summarise(JSON.parse(readFileSync(file, "utf8")), target.requests, target.bundleFile);
        rmSync(target.profileDir, { recursive: true, force: true });
    }
}
process.exit(0);

/** The bundle's module of each line: esbuild marks where each module starts with a `// path` comment. */
function bundleModules(bundleFile: string): (line: number) => string {
    const starts: [number, string][] = [];
    readFileSync(bundleFile, "utf8").split("\n").forEach((text, i) => {
        const match = /^\/\/ ((?:node_modules\/(?:@[^/]+\/)?[^/]+)|[\w./-]+\.m?[jt]s)/.exec(text);
        if (match) starts.push([i, match[1]]);
    });
    return (line) => {
        let found = "bundle";
        for (const [start, name] of starts) if (start <= line) found = name;
        else break;
        return found;
    };
}

/**
 * Self time of the profile by area (a module of the bundle, a Node internal file, GC) and by function, in µs per
 * request, idle time left out (start-up and shut-down are in it too: small against the measured rounds).
 */
function summarise(prof: { nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[]; samples: number[]; timeDeltas: number[] }, requests: number, bundleFile: string) {
    const moduleOf = bundleModules(bundleFile);
    const self = new Map<number, number>();
    for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (prof.timeDeltas[i] ?? 0));
    const byFn = new Map<string, number>();
    const byArea = new Map<string, number>();
    let total = 0;
    for (const node of prof.nodes) {
        const us = self.get(node.id) ?? 0;
        const { functionName, url, lineNumber } = node.callFrame;
        if (!us || functionName === "(idle)") continue;
        const file = url.replace(/^.*\//, "");
        const area = file === path.basename(bundleFile) ? moduleOf(lineNumber) : file ? `node:${file.replace(/^node:/, "")}` : functionName;
        const key = `${functionName || "(anon)"} ${area}:${lineNumber + 1}`;
        byFn.set(key, (byFn.get(key) ?? 0) + us);
        byArea.set(area, (byArea.get(area) ?? 0) + us);
        total += us;
    }
    console.log(`profile: ${(total / requests).toFixed(1)} µs of CPU per request on the main thread (${requests} requests, idle left out)`);
    for (const [name, map, rows] of [["area", byArea, 25], ["function", byFn, 40]] as const) {
        console.log(`top by ${name} (µs self per request):`);
        for (const [k, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, rows)) console.log(`  ${(us / requests).toFixed(1).padStart(7)}  ${k}`);
    }
}
