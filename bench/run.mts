// The benchmark: KeyProxy and EgressGateway side by side with direct access and nginx, interleaved in one run.
// Needs wrk and nginx (Debian: wrk, nginx-light). Traffic stays on 127.0.0.1. Usage: see USAGE.
import { type ChildProcess, execFile, execFileSync, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { envEntries } from "../infra/topology.ts";
import { credentialDigest } from "../proxy-image/src/policy.ts";
import { bundle } from "../scripts/images.mts";
import { auditDirSetting, cpuSeconds, loopbackEgressEnv, percentile, processEnvOf, rssMb, running, start as startProcess, stopChildren } from "./processes.mts";
import { freePort } from "../test/support/processes.ts";
import { removeTempDirs, tempDir } from "../test/support/tempDirs.ts";
import { testPki } from "../test/support/tls.ts";

const USAGE = `usage: npm run bench [-- --quick] [-- --out FILE] [-- --baseline BUNDLE]

  (no flags)   the full run (a few minutes): writes bench/results.md and bench/chart.svg
  --quick      a short run that proves every scenario still runs; its numbers mean nothing, so it writes its
               report to standard output (or to --out FILE), never to bench/results.md
  --out FILE   write the report to FILE instead
  --baseline BUNDLE
               also run another KeyProxy bundle (an earlier build) as "KeyProxy before" in the wrk and
               fixed-rate scenarios, interleaved with the others: before/after in one run
  --baseline-node-options=OPTIONS
               the baseline's NODE_OPTIONS, as its build deployed them, and no other setting (default: this build's)
  --help       this text`;

const ROOT = path.resolve(import.meta.dirname, "..");
/** KeyProxy's process environment as its container gets it by default; the Node floor runs with it too. */
const KEYPROXY_ENV = processEnvOf("keyProxy");
const KEYPROXY_NODE_OPTIONS = KEYPROXY_ENV.NODE_OPTIONS;
const args = process.argv.slice(2);
function usageError(message: string): never {
    console.error(`error: ${message}\n\n${USAGE}`);
    process.exit(2);
}
if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    process.exit(0);
}
/** The value after a flag that takes one, or undefined when the flag is absent. */
function flagValue(flag: string, what: string): string | undefined {
    const index = args.indexOf(flag);
    const value = index >= 0 ? args[index + 1] : undefined;
    if (index >= 0 && (value === undefined || value.startsWith("-"))) usageError(`${flag} needs ${what}`);
    return value;
}
const outFile = flagValue("--out", "a file");
const baselineBundle = flagValue("--baseline", "a KeyProxy bundle");
const BASELINE_NODE_OPTIONS = "--baseline-node-options=";
const baselineNodeOptions = args.find((arg) => arg.startsWith(BASELINE_NODE_OPTIONS))?.slice(BASELINE_NODE_OPTIONS.length) ?? KEYPROXY_NODE_OPTIONS;
const valueIndexes = ["--out", "--baseline"].map((flag) => args.indexOf(flag)).filter((i) => i >= 0).map((i) => i + 1);
const unknown = args.find((arg, i) => !["--quick", "--out", "--baseline"].includes(arg) && !arg.startsWith(BASELINE_NODE_OPTIONS) && !valueIndexes.includes(i));
if (unknown !== undefined) usageError(`unknown argument ${unknown}`);
const quick = args.includes("--quick");
/** Where the report goes: a file, or (quick mode without --out) standard output. */
const out = outFile !== undefined ? path.resolve(outFile) : quick ? undefined : path.join(ROOT, "bench", "results.md");
const P = quick
    ? { seconds: 1, rounds: 1, conns: [1, 16, 100], rates: [500, 1500], rateSeconds: 1, streams: 100, afterLoadSeconds: 1, chunks: 40, chunkRounds: 1, mbStreams: 2, mbRounds: 1, tunnels: 30, tunnelMb: 8 }
    : { seconds: 5, rounds: 3, conns: [1, 16, 100], rates: [500, 1500], rateSeconds: 5, streams: 1000, afterLoadSeconds: 60, chunks: 200, chunkRounds: 6, mbStreams: 48, mbRounds: 9, tunnelMb: 256, tunnels: 300 };
const TOKEN = "ocp_benchbenchbenchbenchbenchbenchbenchbenchbenchbe";
/** What the mock upstream receives as the provider key (it checks nothing). */
const KEY = "bench-upstream-key";
const work = tempDir("openclaw-bench");
const children: ChildProcess[] = [];
const began = performance.now();
const progress = (message: string) => console.error(`[bench ${((performance.now() - began) / 1000).toFixed(1)}s] ${message}`);

// On any other way out (an error, a signal) the children still get SIGTERM, and the temp dirs go.
process.on("exit", () => {
    for (const child of children.filter(running)) child.kill("SIGTERM");
    removeTempDirs();
});
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

const start = (command: string, argv: string[], env: NodeJS.ProcessEnv, ready: (line: Record<string, any>) => boolean, onLine?: (line: Record<string, any>) => void) =>
    startProcess(children, command, argv, env, ready, onLine);
const median = (values: number[]) => percentile(values, 0.5);

// ---------------------------------------------------------------------------------------------- set-up
const pki = testPki();
progress("starting the mock upstream, KeyProxy, nginx, EgressGateway");
const upstream = await start(process.execPath, [path.join(ROOT, "bench", "upstream.mts"), path.join(pki.dir, "server.pem"), path.join(pki.dir, "server.key")], {}, (l) => typeof l.port === "number");
const upstreamPort: number = upstream.line.port;

const keyProxyBundle = await bundle("keyProxy");
/** KeyProxy's access lines, counted as they are read: its stdout is read all along, so lines never queue in the pipe. */
let accessLines = 0;
/** Starts a KeyProxy bundle with its own registry and ledger, the bench agent registered. */
async function startKeyProxy(bundleFile: string, name: string) {
    const env = {
        // As in the image: the environment comes from infra/topology.ts; the baseline as its own build deployed it,
        // with only the Node options given.
        ...(name === "baseline" ? { NODE_OPTIONS: baselineNodeOptions } : KEYPROXY_ENV),
        KEYPROXY_CONFIG: JSON.stringify({
            listen: { host: "127.0.0.1", port: 0 },
            admin: [{ host: "127.0.0.1", port: 0 }],
            upstreams: { anthropic: { baseUrl: `https://localhost:${upstreamPort}` } },
            extraCaFile: pki.caFile,
            registryDir: path.join(work, `${name}-agents`),
            ...auditDirSetting(bundleFile, path.join(work, `${name}-audit`)),
            // Over HTTP/1.1 every open stream holds an upstream connection: the pool must hold them all, or streams past
            // it wait unanswered in undici's queue and the memory measured is that of fewer streams (the baseline may
            // be such a build; over HTTP/2 a connection carries 100).
            limits: { maxConcurrentPerAgent: 100_000, maxUpstreamConnections: P.streams + 100 },
            metering: { ledgerFile: path.join(work, `${name}-ledger.log`) },
        }),
        KEYPROXY_KEY_ANTHROPIC: KEY,
    };
    execFileSync(process.execPath, [bundleFile, "register"], {
        input: JSON.stringify({ name: "bench", credentialSha256: credentialDigest(TOKEN), subnet: "127.0.0.0/8", budget: { totalUsd: 1_000_000 } }),
        env: { PATH: process.env.PATH, ...env },
    });
    const started = await start(process.execPath, [bundleFile, "serve"], env, (l) => l.event === "listening", (l) => {
        if (l.event === "request" && name === "keyproxy") accessLines++;
    });
    return { port: started.line.port as number, pid: started.child.pid! };
}
const { port: keyProxyPort, pid: keyProxyPid } = await startKeyProxy(keyProxyBundle, "keyproxy");
const baseline = baselineBundle === undefined ? undefined : await startKeyProxy(path.resolve(baselineBundle), "baseline");
const freshRss: Record<string, number> = { keyProxy: rssMb([keyProxyPid]) };

const nginxPort = await freePort();
writeFileSync(
    path.join(work, "nginx.conf"),
    `worker_processes 1;
pid ${work}/nginx.pid;
error_log ${work}/nginx-error.log warn;
events { worker_connections 8192; }
http {
    access_log ${work}/nginx-access.log;
    client_body_temp_path ${work}/nginx-body;
    proxy_temp_path ${work}/nginx-proxy;
    upstream llm { server 127.0.0.1:${upstreamPort}; keepalive 256; }
    server {
        listen 127.0.0.1:${nginxPort};
        location /anthropic/ {
            proxy_pass https://llm/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host localhost:${upstreamPort};
            proxy_set_header x-api-key "${KEY}";
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate ${pki.caFile};
            proxy_ssl_session_reuse on;
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
`,
);
const nginx = spawn("nginx", ["-p", work, "-c", path.join(work, "nginx.conf"), "-g", "daemon off;"], { stdio: ["ignore", "ignore", "inherit"] });
children.push(nginx);
await waitForPort(nginxPort);
const nginxPids = execFileSync("pgrep", ["-P", String(nginx.pid)], { encoding: "utf8" }).trim().split("\n").map(Number).concat(nginx.pid!);
freshRss.nginx = rssMb(nginxPids);

// The floor of any Node proxy: node:http + undici dispatch + key injection, nothing else (bench/floor.mts), with the
// services' Node options, so its memory compares with KeyProxy's too.
const floor = await start(process.execPath, [path.join(ROOT, "bench", "floor.mts"), `https://localhost:${upstreamPort}`, pki.caFile, KEY], KEYPROXY_ENV, (l) => typeof l.port === "number");
const floorPort: number = floor.line.port;
const floorPid = floor.child.pid!;
freshRss.floor = rssMb([floorPid]);
// The same floor metered: the least any metering proxy on Node does per request (bench/floor.mts says what).
const meteredFloor = await start(process.execPath, [path.join(ROOT, "bench", "floor.mts"), `https://localhost:${upstreamPort}`, pki.caFile, KEY, credentialDigest(TOKEN), path.join(work, "floor-ledger.log")], KEYPROXY_ENV, (l) => typeof l.port === "number");

// The Portkey AI gateway (TypeScript, Hono on Node), as it ships, pointed at the mock upstream by its custom-host
// header; it trusts the test CA through NODE_EXTRA_CA_CERTS.
const portkeyPort = await freePort();
const portkey = spawn(process.execPath, [path.join(ROOT, "node_modules", "@portkey-ai", "gateway", "build", "start-server.js"), `--port=${portkeyPort}`, "--headless"], {
    env: { PATH: process.env.PATH, NODE_ENV: "production", NODE_EXTRA_CA_CERTS: pki.caFile },
    stdio: ["ignore", "pipe", "inherit"],
});
children.push(portkey);
portkey.stdout!.resume();
await waitForPort(portkeyPort);
const portkeyPid = portkey.pid!;
freshRss.portkey = rssMb([portkeyPid]);

async function waitForPort(port: number) {
    for (let i = 0; i < 100; i++) {
        const ok = await new Promise<boolean>((resolve) => net.connect(port, "127.0.0.1").on("connect", function (this: net.Socket) {
            this.destroy();
            resolve(true);
        }).on("error", () => resolve(false)));
        if (ok) return;
        await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`nothing listens on ${port}`);
}

// ------------------------------------------------------------------------------------- request latency
interface Target {
    name: string;
    url: string;
    method: "GET" | "POST";
    headers: Record<string, string>;
    body?: string;
    pids: number[];
    /** Where the fixed-rate generator sends instead (direct: the upstream's plain-HTTP port, like the proxies' clients). */
    openLoopUrl?: string;
}
const MESSAGE = JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 64, messages: [{ role: "user", content: "hi" }] });
const TARGETS: Target[] = [
    {
        name: "direct",
        url: `https://127.0.0.1:${upstreamPort}/v1/messages`,
        openLoopUrl: `http://127.0.0.1:${upstream.line.plainPort}/v1/messages`,
        method: "POST",
        headers: { "x-api-key": KEY, "content-type": "application/json" },
        body: MESSAGE,
        pids: [],
    },
    { name: "nginx", url: `http://127.0.0.1:${nginxPort}/anthropic/v1/messages`, method: "POST", headers: { "content-type": "application/json" }, body: MESSAGE, pids: nginxPids },
    {
        name: "Portkey",
        url: `http://127.0.0.1:${portkeyPort}/v1/messages`,
        method: "POST",
        headers: { "x-portkey-provider": "anthropic", "x-portkey-custom-host": `https://localhost:${upstreamPort}/v1`, "x-api-key": KEY, "content-type": "application/json" },
        body: MESSAGE,
        pids: [portkeyPid],
    },
    { name: "Node floor", url: `http://127.0.0.1:${floorPort}/anthropic/v1/messages`, method: "POST", headers: { "content-type": "application/json" }, body: MESSAGE, pids: [floorPid] },
    { name: "Node floor, metered", url: `http://127.0.0.1:${meteredFloor.line.port}/anthropic/v1/messages`, method: "POST", headers: { "x-api-key": TOKEN, "content-type": "application/json" }, body: MESSAGE, pids: [meteredFloor.child.pid!] },
    ...(baseline ? [{ name: "KeyProxy before", url: `http://127.0.0.1:${baseline.port}/anthropic/v1/messages`, method: "POST" as const, headers: { "x-api-key": TOKEN, "content-type": "application/json" }, body: MESSAGE, pids: [baseline.pid] }] : []),
    { name: "KeyProxy", url: `http://127.0.0.1:${keyProxyPort}/anthropic/v1/messages`, method: "POST", headers: { "x-api-key": TOKEN, "content-type": "application/json" }, body: MESSAGE, pids: [keyProxyPid] },
];
const PROXIES = TARGETS.map((t) => t.name).filter((name) => name !== "direct");

interface WrkResult {
    rps: number;
    p50: number;
    p99: number;
    requests: number;
    cpu: number;
    /** Cores busy over the run: the proxy, the mock upstream, and the whole machine (wrk, anything else on it). */
    cores: { proxy: number; upstream: number; machine: number };
}

/** Busy and total CPU time of the whole machine so far, in clock ticks, from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
    const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    return { busy: total - fields[3] - fields[4], total };
}

function toMs(text: string): number {
    const match = /([\d.]+)(us|ms|s)/.exec(text)!;
    return Number(match[1]) * (match[2] === "us" ? 0.001 : match[2] === "s" ? 1000 : 1);
}

const execFileAsync = promisify(execFile);

/** wrk runs as a child the driver awaits (never a synchronous call): the driver keeps reading KeyProxy's log meanwhile. */
async function wrk(target: Target, connections: number): Promise<WrkResult> {
    const script = path.join(work, `${target.name}.lua`);
    writeFileSync(
        script,
        `wrk.method = "${target.method}"\n${target.body ? `wrk.body = '${target.body}'\n` : ""}${Object.entries(target.headers).map(([k, v]) => `wrk.headers["${k}"] = "${v}"`).join("\n")}\n`,
    );
    const before = cpuSeconds(target.pids);
    const upstreamBefore = cpuSeconds([upstream.child.pid!]);
    const ticksBefore = machineTicks();
    const wallBefore = performance.now();
    const { stdout: output } = await execFileAsync("wrk", ["-t1", `-c${connections}`, `-d${P.seconds}s`, "--latency", "-s", script, target.url], { encoding: "utf8" });
    const cpu = cpuSeconds(target.pids) - before;
    const wall = (performance.now() - wallBefore) / 1000;
    const ticks = machineTicks();
    const cores = { proxy: cpu / wall, upstream: (cpuSeconds([upstream.child.pid!]) - upstreamBefore) / wall, machine: ((ticks.busy - ticksBefore.busy) / (ticks.total - ticksBefore.total)) * os.cpus().length };
    const p50 = toMs(/^\s+50%\s+(\S+)/m.exec(output)![1]);
    const p99 = toMs(/^\s+99%\s+(\S+)/m.exec(output)![1]);
    const requests = Number(/(\d+) requests in/.exec(output)![1]);
    const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
    if (non2xx) throw new Error(`${target.name}: ${non2xx[1]} failed responses`);
    return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(output)![1]), p50, p99, requests, cpu, cores };
}

const latency: Record<number, Record<string, WrkResult[]>> = {};
for (const connections of P.conns) {
    latency[connections] = {};
    for (let round = 0; round < P.rounds; round++) {
        for (const target of TARGETS) {
            progress(`wrk ${target.name}, ${connections} connections, round ${round + 1}`);
            (latency[connections][target.name] ??= []).push(await wrk(target, connections));
        }
    }
}
const med = (results: WrkResult[], key: Exclude<keyof WrkResult, "cores">) => median(results.map((r) => r[key]));

// ------------------------------------------------------------------------------ fixed arrival rate
interface OpenLoopResult {
    sent: number;
    completed: number;
    failed: number;
    late: number;
    p50: number;
    p99: number;
    p999: number;
    cpu: number;
}

async function openLoop(target: Target, rate: number): Promise<OpenLoopResult> {
    const options = { url: target.openLoopUrl ?? target.url, method: target.method, headers: target.headers, body: target.body, rate, seconds: P.rateSeconds, connections: 256 };
    const before = cpuSeconds(target.pids);
    const { stdout } = await execFileAsync(process.execPath, [path.join(ROOT, "bench", "openloop.mts"), JSON.stringify(options)], { encoding: "utf8", env: { PATH: process.env.PATH } });
    const cpu = cpuSeconds(target.pids) - before;
    const result = JSON.parse(stdout) as Omit<OpenLoopResult, "cpu">;
    if (result.failed > 0) throw new Error(`${target.name} at ${rate} req/s: ${result.failed} of ${result.sent} requests failed`);
    return { ...result, cpu };
}

const openLoopRuns: Record<number, Record<string, OpenLoopResult[]>> = {};
for (const rate of P.rates) {
    openLoopRuns[rate] = {};
    for (let round = 0; round < P.rounds; round++) {
        for (const target of TARGETS) {
            progress(`${rate} req/s fixed rate, ${target.name}, round ${round + 1}`);
            (openLoopRuns[rate][target.name] ??= []).push(await openLoop(target, rate));
        }
    }
}

// ----------------------------------------------------------------------------------- streaming delays
interface StreamTarget {
    name: string;
    request: (query: string) => http.ClientRequest;
}
const streamTargets: StreamTarget[] = [
    {
        name: "direct",
        request: (query) => https.request({ host: "127.0.0.1", port: upstreamPort, method: "POST", path: `/v1/messages?${query}`, headers: { "x-api-key": KEY }, rejectUnauthorized: false, agent: false }),
    },
    { name: "nginx", request: (query) => http.request({ host: "127.0.0.1", port: nginxPort, method: "POST", path: `/anthropic/v1/messages?${query}`, agent: false }) },
    {
        name: "KeyProxy",
        request: (query) => http.request({ host: "127.0.0.1", port: keyProxyPort, method: "POST", path: `/anthropic/v1/messages?${query}`, headers: { "x-api-key": TOKEN, "content-type": "application/json" }, agent: false }),
    },
];
/** The Node floor: its chunk delays, its CPU per streamed MB and its memory with open streams, beside KeyProxy's. */
const floorStreams: StreamTarget = {
    name: "Node floor",
    request: (query) => http.request({ host: "127.0.0.1", port: floorPort, method: "POST", path: `/anthropic/v1/messages?${query}`, headers: { "content-type": "application/json" }, agent: false }),
};

interface StreamRun {
    delays: number[];
    ttfb: number;
    reads: number;
    coalesced: number;
    bytes: number;
}

function stream(target: StreamTarget, query: string, body = MESSAGE): Promise<StreamRun> {
    return new Promise((resolve, reject) => {
        const sent = performance.now();
        const req = target.request(query);
        const run: StreamRun = { delays: [], ttfb: NaN, reads: 0, coalesced: 0, bytes: 0 };
        req.on("response", (res) => {
            res.on("data", (chunk: Buffer) => {
                const now = performance.timeOrigin + performance.now();
                if (Number.isNaN(run.ttfb)) run.ttfb = performance.now() - sent;
                run.reads++;
                run.bytes += chunk.length;
                const stamps = [...chunk.toString("latin1").matchAll(/"t":([\d.]+)/g)];
                if (stamps.length > 1) run.coalesced++;
                for (const stamp of stamps) run.delays.push(now - Number(stamp[1]));
            });
            res.on("end", () => resolve(run));
            res.on("error", reject);
        });
        req.on("error", reject);
        req.end(body);
    });
}

const chunkRuns: Record<string, StreamRun[]> = {};
for (let round = 0; round < P.chunkRounds; round++) {
    for (const target of [...streamTargets, floorStreams]) {
        progress(`streaming ${P.chunks} chunks through ${target.name}, round ${round + 1}`);
        for (let i = 0; i < 3; i++) (chunkRuns[target.name] ??= []).push(await stream(target, `chunks=${P.chunks}&interval=5&size=64`));
    }
}
const chunkStats = (name: string) => {
    const runs = chunkRuns[name];
    const delays = runs.flatMap((r) => r.delays);
    return { p50: percentile(delays, 0.5), p99: percentile(delays, 0.99), ttfb50: median(runs.map((r) => r.ttfb)), ttfb99: percentile(runs.map((r) => r.ttfb), 0.99), coalesced: runs.reduce((s, r) => s + r.coalesced, 0), chunks: delays.length };
};

// ------------------------------------------------------------------------ CPU per streamed MB, metering
/** The metered (POST /v1/messages) and passthrough (GET /v1/models, free) routes of a KeyProxy on `port`. */
const routeTargets = (name: string, port: number) => ({
    metered: { name, request: (query: string) => http.request({ host: "127.0.0.1", port, method: "POST", path: `/anthropic/v1/messages?${query}`, headers: { "x-api-key": TOKEN, "content-type": "application/json" }, agent: false }) },
    passthrough: { name: `${name} passthrough`, request: (query: string) => http.request({ host: "127.0.0.1", port, method: "GET", path: `/anthropic/v1/models?${query}`, headers: { "x-api-key": TOKEN }, agent: false }) },
});
// More data per measurement, more rounds, alternating order, and the overhead taken per round (each metered run
// against the passthrough run of the same round) keep the ratio out of the noise. The baseline bundle, when given,
// runs the same rounds interleaved, so a change in the ratio can be told from a change in the machine.
const meteringSubjects = [{ name: "KeyProxy", pid: keyProxyPid, ...routeTargets("KeyProxy", keyProxyPort) }, ...(baseline ? [{ name: "KeyProxy before", pid: baseline.pid, ...routeTargets("KeyProxy before", baseline.port) }] : [])];
const cpuPerMb: Record<string, { passthrough: number[]; metered: number[] }> = Object.fromEntries(meteringSubjects.map((subject) => [subject.name, { passthrough: [], metered: [] }]));
/** CPU-ms per MB of the Node floor carrying the same streams (and so holding, later, what they left in its memory). */
const floorCpuPerMb: number[] = [];
/** CPU-ms per MB of `pid` while `P.mbStreams` fast streams go through `target` at once. */
async function cpuPerStreamedMb(target: StreamTarget, pid: number, body: string): Promise<number> {
    const before = cpuSeconds([pid]);
    const runs = await Promise.all(Array.from({ length: P.mbStreams }, () => stream(target, "chunks=2000&interval=0&size=400", body)));
    const mb = runs.reduce((s, r) => s + r.bytes, 0) / 1e6;
    return ((cpuSeconds([pid]) - before) * 1000) / mb;
}
for (let round = 0; round < P.mbRounds; round++) {
    progress(`CPU per MB, Node floor, round ${round + 1}`);
    floorCpuPerMb.push(await cpuPerStreamedMb(floorStreams, floorPid, MESSAGE));
    for (const subject of meteringSubjects) {
        // Alternate which goes first, so neither pays for the other's garbage every time.
        const order = [["passthrough", subject.passthrough], ["metered", subject.metered]] as const;
        for (const [kind, target] of round % 2 === 0 ? order : [...order].reverse()) {
            progress(`CPU per MB, ${subject.name} ${kind}, round ${round + 1}`);
            cpuPerMb[subject.name][kind].push(await cpuPerStreamedMb(target, subject.pid, kind === "passthrough" ? "" : MESSAGE));
        }
    }
}

// ---------------------------------------------------------------------- memory with many open streams
/**
 * Opens `count` streams that send their first event at once and the next only 20 s later, so every one is open
 * when memory is read; resolves once each has received its first event, with how many are still open then.
 */
async function openStreams(target: StreamTarget, count: number): Promise<{ requests: http.ClientRequest[]; flowing: () => number }> {
    const requests: http.ClientRequest[] = [];
    let open = 0;
    await Promise.all(
        Array.from({ length: count }, () =>
            new Promise<void>((resolve, reject) => {
                const req = target.request("chunks=2&interval=20000&size=16");
                req.on("response", (res) => {
                    res.once("data", () => {
                        open++;
                        resolve();
                    });
                    res.once("end", () => open--);
                });
                req.on("error", reject);
                req.end(MESSAGE);
                requests.push(req);
            }),
        ),
    );
    return { requests, flowing: () => open };
}
progress(`holding ${P.streams} open streams through KeyProxy, then nginx, then the Node floor`);
const heldKp = await openStreams(streamTargets[2], P.streams);
const streamsRss: Record<string, number> = { keyProxy: rssMb([keyProxyPid]), keyProxyFlowing: heldKp.flowing() };
for (const req of heldKp.requests) req.destroy();
const heldNginx = await openStreams(streamTargets[1], P.streams);
streamsRss.nginx = rssMb(nginxPids);
streamsRss.nginxFlowing = heldNginx.flowing();
for (const req of heldNginx.requests) req.destroy();
const heldFloor = await openStreams(floorStreams, P.streams);
streamsRss.floor = rssMb([floorPid]);
streamsRss.floorFlowing = heldFloor.flowing();
for (const req of heldFloor.requests) req.destroy();
const loadEnded = performance.now();

// -------------------------------------------------------------------------------------- EgressGateway
progress("EgressGateway: CONNECT set-up and tunnel throughput");
const sink = await start(
    process.execPath,
    ["-e", `const s=require("net").createServer(c=>{let n=0;c.on("data",d=>n+=d.length);c.on("end",()=>c.end(String(n)))}).listen(0,"127.0.0.2",()=>console.log(JSON.stringify({port:s.address().port})))`],
    {},
    (l) => typeof l.port === "number",
);
const sinkPort: number = sink.line.port;
const egressBundle = await bundle("egressGateway");
const egressEnv = loopbackEgressEnv(path.join(work, "egress-agents"), { staticHosts: { "sink.bench": ["127.0.0.2"] }, limits: { maxTunnelsPerAgent: 10_000 } });
execFileSync(process.execPath, [egressBundle, "register"], {
    input: JSON.stringify({ name: "bench", subnet: "127.0.0.0/8", mode: "enforce", allow: [{ host: "sink.bench", ports: [sinkPort] }] }),
    env: { PATH: process.env.PATH, ...egressEnv },
});
const egress = await start(process.execPath, [egressBundle, "serve"], egressEnv, (l) => l.event === "listening");
egress.child.stdout!.resume();
const egressPort: number = egress.line.port;
await new Promise((r) => setTimeout(r, 300)); // the registry is read at start; let the watcher settle

/** Opens a socket to the sink, directly or through a CONNECT tunnel; resolves once bytes can flow. */
function openTunnel(through: boolean): Promise<{ socket: net.Socket; setupMs: number }> {
    return new Promise((resolve, reject) => {
        const started = performance.now();
        const socket = net.connect(through ? egressPort : sinkPort, through ? "127.0.0.1" : "127.0.0.2");
        socket.once("error", reject);
        socket.once("connect", () => {
            if (!through) return resolve({ socket, setupMs: performance.now() - started });
            socket.write(`CONNECT sink.bench:${sinkPort} HTTP/1.1\r\nHost: sink.bench:${sinkPort}\r\n\r\n`);
            socket.once("data", (chunk) => {
                if (!chunk.toString().startsWith("HTTP/1.1 200")) return reject(new Error(chunk.toString()));
                resolve({ socket, setupMs: performance.now() - started });
            });
        });
    });
}

async function pushThrough(through: boolean, megabytes: number): Promise<{ mbPerSecond: number; cpu: number }> {
    const { socket } = await openTunnel(through);
    const block = Buffer.alloc(64 * 1024, 120);
    const total = Math.ceil((megabytes * 1024 * 1024) / block.length) * block.length;
    const before = cpuSeconds([egress.child.pid!]);
    const started = performance.now();
    const answer = once(socket, "data");
    for (let sent = 0; sent < total; sent += block.length) if (!socket.write(block)) await once(socket, "drain");
    socket.end();
    const [reply] = (await answer) as [Buffer];
    if (Number(reply.toString()) !== total) throw new Error(`sink received ${reply} of ${total} bytes`);
    const seconds = (performance.now() - started) / 1000;
    socket.destroy();
    return { mbPerSecond: total / 1e6 / seconds, cpu: cpuSeconds([egress.child.pid!]) - before };
}

const setup: Record<string, number[]> = { direct: [], gateway: [] };
const tunnelRuns: Record<string, { mbPerSecond: number; cpu: number }[]> = { direct: [], gateway: [] };
for (let round = 0; round < P.rounds; round++) {
    for (const [name, through] of [["direct", false], ["gateway", true]] as const) {
        for (let i = 0; i < P.tunnels / P.rounds; i++) {
            const { socket, setupMs } = await openTunnel(through);
            setup[name].push(setupMs);
            socket.destroy();
        }
        tunnelRuns[name].push(await pushThrough(through, P.tunnelMb / P.rounds));
    }
}

// ------------------------------------------------------------------------------- memory after load
const settleMs = P.afterLoadSeconds * 1000 - (performance.now() - loadEnded);
if (settleMs > 0) {
    progress(`waiting ${(settleMs / 1000).toFixed(0)} s more before reading memory ${P.afterLoadSeconds} s after the load`);
    await new Promise((resolve) => setTimeout(resolve, settleMs));
}
const idleRss = { keyProxy: rssMb([keyProxyPid]), nginx: rssMb(nginxPids), portkey: rssMb([portkeyPid]), floor: rssMb([floorPid]) };
const loggedLines = accessLines;

// ------------------------------------------------------------------------------------------- report
const f = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");
const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
const lines: string[] = [];
lines.push(`# Benchmark results${quick ? " (quick mode: proves the benchmark runs; numbers are not meaningful)" : ""}`, "");
const shownArgs = args.filter((arg, i) => arg !== "--out" && args[i - 1] !== "--out");
lines.push(`Command: \`npm run bench${shownArgs.length > 0 ? ` -- ${shownArgs.join(" ")}` : ""}\` (bench/run.mts), ${new Date().toISOString().slice(0, 10)}.`);
lines.push(`Machine: ${os.cpus().length} cores (${cpuModel}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}; Node ${process.version}; ${spawnSync("nginx", ["-v"], { encoding: "utf8" }).stderr.trim()}; wrk ${spawnSync("wrk", ["--version"], { encoding: "utf8" }).stdout.split("\n")[0].split(" ")[1] ?? ""}.`);
lines.push(
    "",
    "Everything runs on one 2-core machine at once: the mock HTTPS upstream, the proxy under test, and the load",
    "generator compete for the same cores, so requests per second mostly measure that contention. The comparable",
    "numbers are the proxies' own CPU time for the same work, and latency added over direct access. Each scenario is",
    `interleaved (direct, nginx, Portkey, KeyProxy, repeated ${P.rounds}x) and the median round is reported. KeyProxy runs`,
    "as its production bundle with metering, budgets and its durable ledger on; nginx (1 worker) does the same job minus",
    "those: TLS upstream with keep-alive, key injection, no buffering. The Portkey AI gateway (npm `@portkey-ai/gateway`,",
    "TypeScript on Node, as it ships) routes by its `x-portkey-custom-host` header to the same mock upstream.",
    "The mock upstream speaks HTTP/2 and HTTP/1.1 over TLS, ALPN choosing, as the providers' APIs do: KeyProxy and the",
    "Node floor (undici) talk HTTP/2 to it, nginx (`proxy_pass`) and Portkey (Node's `fetch`) HTTP/1.1, as each would to a provider.",
    `KeyProxy and the Node floor run with their container's environment, \`${envEntries(KEYPROXY_ENV).join(" ")}\`${baseline ? `; the baseline with \`NODE_OPTIONS=${baselineNodeOptions}\` only` : ""}.`,
    "",
);
lines.push("## Added latency over direct (non-streaming POST /v1/messages, wrk, closed loop)", "");
lines.push(`| concurrent | direct p50 / p99 ms | ${PROXIES.map((name) => `${name} added p50 / p99 ms`).join(" | ")} |`, `| ---: | ---: | ${PROXIES.map(() => "---:").join(" | ")} |`);
for (const c of P.conns) {
    const d = latency[c].direct;
    const added = (name: string) => `${f(med(latency[c][name], "p50") - med(d, "p50"), 3)} / ${f(med(latency[c][name], "p99") - med(d, "p99"), 3)}`;
    lines.push(`| ${c} | ${f(med(d, "p50"), 3)} / ${f(med(d, "p99"), 3)} | ${PROXIES.map(added).join(" | ")} |`);
}

lines.push("", "## Added latency at a fixed arrival rate (open loop, measured from each request's due time)", "");
lines.push(
    "A separate generator process sends request i at start + i / rate whatever the answers before it do, and measures",
    "each latency from that due time, so a stall counts in every request it delays (no coordinated omission). Direct",
    "is the mock upstream's plain-HTTP port (the same answers), so the baseline carries no client-side TLS the proxies'",
    "clients do not do either. On this shared 2-core host the tail (p99, p99.9) is mostly scheduling: compare proxies",
    "within a row.",
    "",
);
lines.push(`| rate req/s | direct p50 / p99 / p99.9 ms | ${PROXIES.map((name) => `${name} added p50 / p99 / p99.9 ms`).join(" | ")} |`, `| ---: | ---: | ${PROXIES.map(() => "---:").join(" | ")} |`);
const olMed = (rate: number, name: string, key: "p50" | "p99" | "p999") => median(openLoopRuns[rate][name].map((r) => r[key]));
const olAdded = (rate: number, name: string, key: "p50" | "p99" | "p999") => olMed(rate, name, key) - olMed(rate, "direct", key);
for (const rate of P.rates) {
    const triple = (name: string) => (["p50", "p99", "p999"] as const).map((k) => f(name === "direct" ? olMed(rate, name, k) : olAdded(rate, name, k), 2)).join(" / ");
    lines.push(`| ${rate} | ${triple("direct")} | ${PROXIES.map(triple).join(" | ")} |`);
}

const busiest = P.conns[P.conns.length - 1];
const per10k = (results: { cpu: number; requests?: number; completed?: number }[]) => median(results.map((r) => (r.cpu / (r.requests ?? r.completed!)) * 10_000));
const wrkPer10k = Object.fromEntries(PROXIES.map((name) => [name, per10k(latency[busiest][name])]));
const ratePer10k = Object.fromEntries(PROXIES.map((name) => [name, per10k(openLoopRuns[P.rates[0]][name])]));
lines.push("", "## Throughput per core: CPU per request", "");
lines.push(
    `The proxies' own CPU (schedstat of every thread, in nanoseconds) per 10k metered requests: closed loop at ${busiest}`,
    `concurrent (wrk, the proxy saturated) and at a fixed ${P.rates[0]} req/s (not saturated).`,
    "",
);
lines.push(`| proxy | requests/s at ${busiest} concurrent (whole machine) | CPU-s per 10k, ${busiest} concurrent | CPU-s per 10k at ${P.rates[0]} req/s | requests per CPU-second |`, "| --- | ---: | ---: | ---: | ---: |");
for (const name of PROXIES) {
    lines.push(`| ${name === "nginx" ? "nginx, 1 worker" : name} | ${f(med(latency[busiest][name], "rps"), 0)} | ${f(wrkPer10k[name], 3)} | ${f(ratePer10k[name], 3)} | ${f(10_000 / wrkPer10k[name], 0)} |`);
}
const againstNginx = wrkPer10k.nginx / wrkPer10k.KeyProxy;
const againstPortkey = wrkPer10k.Portkey / wrkPer10k.KeyProxy;
lines.push("", `KeyProxy per core against nginx: **${f(againstNginx)}x** (target at least 0.5x).`);
lines.push("", `KeyProxy per core against the Portkey gateway: **${f(againstPortkey)}x** (target at least 4x).`);
const coreUse = (name: string, key: keyof WrkResult["cores"]) => median(latency[busiest][name].map((r) => r.cores[key]));
lines.push("", "## Both cores", "");
lines.push(
    `Where the machine's ${os.cpus().length} cores went while wrk drove each proxy at ${busiest} concurrent (median round; "machine" counts every`,
    "process on the host, wrk and any other work on this shared machine included):",
    "",
    "| proxy | proxy cores | mock upstream cores | machine cores busy |",
    "| --- | ---: | ---: | ---: |",
);
for (const name of PROXIES) lines.push(`| ${name} | ${f(coreUse(name, "proxy"))} | ${f(coreUse(name, "upstream"))} | ${f(coreUse(name, "machine"))} of ${os.cpus().length} |`);
lines.push(
    "",
    "KeyProxy runs one process (one JavaScript thread plus libuv's pool for the ledger's fsync). A second process could",
    "only add throughput with idle cores: the table shows how many were left while KeyProxy was saturated. In a",
    "deployment KeyProxy's container is limited to `keyProxy.resources.cpus` (default 1), so a second worker would",
    "share the same single CPU. Where more CPUs are given, the design that keeps budgets exact is one ledger writer",
    "(the primary) handing budget leases to workers over IPC: admission and settlement stay in each worker's memory",
    "within its lease, the primary alone writes the file, and a crash still over-counts by at most the open leases.",
);

lines.push("", `The floor of a Node proxy (node:http + undici, key attached, nothing else) per core against nginx: **${f(wrkPer10k.nginx / wrkPer10k["Node floor"])}x**; KeyProxy per core against that floor: ${f(wrkPer10k["Node floor"] / wrkPer10k.KeyProxy)}x.`);
lines.push("", `The same floor metered (credential digest, plan, budget reservation, usage, settlement in a batched fdatasync'd ledger, access line, counter: \`bench/floor.mts\`) per core against nginx: **${f(wrkPer10k.nginx / wrkPer10k["Node floor, metered"])}x**; KeyProxy per core against the metered floor: ${f(wrkPer10k["Node floor, metered"] / wrkPer10k.KeyProxy)}x.`);
if (baseline) {
    lines.push("", `KeyProxy against the baseline bundle (\`--baseline\`), CPU per request: ${f(wrkPer10k["KeyProxy before"] / wrkPer10k.KeyProxy)}x at ${busiest} concurrent, ${f(ratePer10k["KeyProxy before"] / ratePer10k.KeyProxy)}x at ${P.rates[0]} req/s (above 1: the current build spends less).`);
}

lines.push("", `## Streaming (${P.chunks} SSE events 5 ms apart, timestamps carried in the events)`, "");
lines.push("| path | per-chunk delay p50 / p99 ms | added over direct p50 / p99 ms | time to first byte p50 / p99 ms | reads carrying >1 event |", "| --- | ---: | ---: | ---: | ---: |");
const direct = chunkStats("direct");
for (const name of ["direct", "nginx", "Node floor", "KeyProxy"]) {
    const s = chunkStats(name);
    lines.push(`| ${name} | ${f(s.p50, 3)} / ${f(s.p99, 3)} | ${name === "direct" ? "-" : `${f(s.p50 - direct.p50, 3)} / ${f(s.p99 - direct.p99, 3)}`} | ${f(s.ttfb50, 2)} / ${f(s.ttfb99, 2)} | ${s.coalesced} of ${s.chunks} |`);
}

lines.push("", "## Memory with open streams", "");
lines.push(
    `RSS fresh (right after start), with ${P.streams} open SSE streams (each has had its first event and is still open`,
    `when memory is read), and ${P.afterLoadSeconds} s after the last load; KeyProxy's log is read all along (${loggedLines} access lines).`,
    "",
);
lines.push(`| process | fresh RSS MB | RSS MB with ${P.streams} open streams | streams flowing | RSS MB ${P.afterLoadSeconds} s after load |`, "| --- | ---: | ---: | ---: | ---: |");
lines.push(`| KeyProxy | ${f(freshRss.keyProxy, 1)} | ${f(streamsRss.keyProxy, 1)} | ${streamsRss.keyProxyFlowing} of ${P.streams} | ${f(idleRss.keyProxy, 1)} |`);
lines.push(`| nginx (master + worker) | ${f(freshRss.nginx, 1)} | ${f(streamsRss.nginx, 1)} | ${streamsRss.nginxFlowing} of ${P.streams} | ${f(idleRss.nginx, 1)} |`);
lines.push(`| Portkey | ${f(freshRss.portkey, 1)} | - | - | ${f(idleRss.portkey, 1)} |`);
lines.push(`| Node floor (node:http + undici, nothing else) | ${f(freshRss.floor, 1)} | ${f(streamsRss.floor, 1)} | ${streamsRss.floorFlowing} of ${P.streams} | ${f(idleRss.floor, 1)} |`);

const meteringOverhead = (name: string) => median(cpuPerMb[name].metered.map((m, i) => (m / cpuPerMb[name].passthrough[i] - 1) * 100));
const overhead = meteringOverhead("KeyProxy");
lines.push("", "## CPU per streamed MB: metering and budgets on against pure passthrough", "");
lines.push("| KeyProxy | passthrough (GET /v1/models, not metered) CPU-ms per MB | metered, budget enforced (POST /v1/messages) CPU-ms per MB | metering overhead, median of paired rounds |", "| --- | ---: | ---: | ---: |");
for (const { name } of meteringSubjects) lines.push(`| ${name} | ${f(median(cpuPerMb[name].passthrough), 3)} | ${f(median(cpuPerMb[name].metered), 3)} | ${f(meteringOverhead(name), 1)}% |`);
lines.push("", `The Node floor carrying the same streams: ${f(median(floorCpuPerMb), 3)} CPU-ms per MB.`);
lines.push("", `Metering overhead, median of ${P.mbRounds} paired rounds: **${f(overhead, 1)}%** (target at most 10%).`);

lines.push("", "## EgressGateway", "");
lines.push("| path | CONNECT set-up p50 / p99 ms | tunnel throughput MB/s | gateway CPU-ms per MB |", "| --- | ---: | ---: | ---: |");
lines.push(`| direct TCP | ${f(median(setup.direct), 3)} / ${f(percentile(setup.direct, 0.99), 3)} | ${f(median(tunnelRuns.direct.map((r) => r.mbPerSecond)), 0)} | - |`);
lines.push(`| through EgressGateway | ${f(median(setup.gateway), 3)} / ${f(percentile(setup.gateway, 0.99), 3)} | ${f(median(tunnelRuns.gateway.map((r) => r.mbPerSecond)), 0)} | ${f((median(tunnelRuns.gateway.map((r) => r.cpu)) * 1000) / ((P.tunnelMb / P.rounds) * 1.048576), 3)} |`);

const targets = [
    ["throughput per core vs nginx (metered route)", againstNginx, ">= 0.5x", (v: number) => v >= 0.5],
    ["throughput per core vs Portkey", againstPortkey, ">= 4x", (v: number) => v >= 4],
    [`added p99 at ${P.rates[0]} req/s (open loop), ms`, olAdded(P.rates[0], "KeyProxy", "p99"), "<= 2 ms", (v: number) => v <= 2],
    [`streams flowing of ${P.streams}`, streamsRss.keyProxyFlowing, `= ${P.streams}`, (v: number) => v === P.streams],
    [`RSS at ${P.streams} streams, MB`, streamsRss.keyProxy, "<= 150 MB", (v: number) => v <= 150],
    ["metering overhead on streams, %", overhead, "<= 10%", (v: number) => v <= 10],
    ["per-chunk delay p99 (added), ms", chunkStats("KeyProxy").p99 - direct.p99, "<= 1 ms", (v: number) => v <= 1],
] as const;
lines.push("", "## Against the targets", "", "| target | measured | goal | met |", "| --- | ---: | --- | --- |");
for (const [name, value, goal, met] of targets) lines.push(`| ${name} | ${f(value, 3)} | ${goal} | ${met(value) ? "yes" : "**no**"} |`);

await stopChildren(children);
removeTempDirs();
if (out === undefined) {
    process.stdout.write(`${lines.join("\n")}\n`);
} else {
    writeFileSync(out, `${lines.join("\n")}\n`);
    if (!quick) writeFileSync(path.join(path.dirname(out), "chart.svg"), chart());
    progress(`wrote ${path.relative(process.cwd(), out)}`);
}
process.exit(0);

/** Bar chart of added latency (p50/p99) per concurrency for nginx and KeyProxy. */
function chart(): string {
    const bars: { label: string; value: number; color: string }[] = [];
    for (const c of P.conns) {
        for (const [name, color] of [["nginx", "#7a9cc6"], ["KeyProxy", "#d9822b"]] as const) {
            for (const q of ["p50", "p99"] as const) {
                bars.push({ label: `${name} ${q} @${c}`, value: med(latency[c][name], q) - med(latency[c].direct, q), color: q === "p50" ? color : `${color}99` });
            }
        }
    }
    const max = Math.max(1, ...bars.map((b) => b.value));
    const rowHeight = 22;
    const width = 640;
    const rows = bars.map((b, i) => {
        const w = Math.max(1, (Math.max(0, b.value) / max) * 380);
        return `<text x="200" y="${40 + i * rowHeight + 15}" text-anchor="end" font-size="12">${b.label}</text><rect x="210" y="${40 + i * rowHeight + 3}" width="${w.toFixed(1)}" height="16" fill="${b.color}"/><text x="${(215 + w).toFixed(1)}" y="${40 + i * rowHeight + 15}" font-size="12">${b.value.toFixed(3)} ms</text>`;
    });
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${60 + bars.length * rowHeight}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="10" y="24" font-size="15">Latency added over direct, by concurrency (ms, lower is better)</text>${rows.join("")}</svg>\n`;
}
