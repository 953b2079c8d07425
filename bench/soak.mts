// The KeyProxy soak: many long-lived metered SSE streams at once, for a minute, through the production bundle.
//   npm run bench:soak                                        1,000 streams for 60 s, writes bench/soak.md
//   npm run bench:soak -- --streams 100 --seconds 10 --out F   a short run
//   ... -- --http1                                            the mock upstream speaks HTTP/1.1 only (no h2 in ALPN)
//   ... -- --bundle FILE                                      another KeyProxy bundle (an earlier build) instead of this one
// Loopback only; bounded in streams and time (a deadline ends it with an error); stops by itself.
import type { ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { credentialDigest } from "../proxy-image/src/policy.ts";
import { runtimeConfigSchema } from "../proxy-image/src/config.ts";
import { bundle } from "../scripts/images.mts";
import { testPki } from "../test/support/tls.ts";
import { cpuSeconds, openDescriptors, processEnvOf, rssMb, start } from "./processes.mts";

const ROOT = path.resolve(import.meta.dirname, "..");
const args = process.argv.slice(2);
const option = (name: string, fallback: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback);
const STREAMS = option("--streams", 1000);
const SECONDS = option("--seconds", 60);
const HTTP1 = args.includes("--http1");
const otherBundle = args.includes("--bundle") ? path.resolve(args[args.indexOf("--bundle") + 1]) : undefined;
const out = args.includes("--out") ? path.resolve(args[args.indexOf("--out") + 1]) : path.join(ROOT, "bench", "soak.md");
const SAMPLE_MS = 5000;
/** Each stream sends one event a second for the whole soak, then its usage and end. */
const EVENT_INTERVAL_MS = 1000;
/** The default per-agent limit stays; the streams are spread over as many agents as it takes. */
const PER_AGENT = runtimeConfigSchema.parse({ upstreams: {} }).limits.maxConcurrentPerAgent;
const AGENTS = Math.ceil(STREAMS / PER_AGENT);
/** Streams opened at once while ramping up (Node's listen backlog is 511). */
const RAMP_BATCH = 100;
/** After the streams end, how long the upstream keep-alive connections may take to close (undici: the server's hint, 65 s, less 2 s). */
const KEEP_ALIVE_GRACE_MS = 90_000;
const DEADLINE_MS = 60_000 + SECONDS * 1000 + KEEP_ALIVE_GRACE_MS;
const MESSAGE = JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 64, stream: true, messages: [{ role: "user", content: "hi" }] });

const work = mkdtempSync(path.join(os.tmpdir(), "keyproxy-soak-"));
const children: ChildProcess[] = [];
const began = performance.now();
const elapsed = () => (performance.now() - began) / 1000;
const progress = (message: string) => console.error(`[soak ${elapsed().toFixed(1)}s] ${message}`);
process.on("exit", () => {
    for (const child of children) child.kill("SIGKILL");
    rmSync(work, { recursive: true, force: true });
});
setTimeout(() => {
    console.error(`soak: past its ${DEADLINE_MS / 1000} s deadline, stopping`);
    process.exit(2);
}, DEADLINE_MS).unref();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------- set-up
const pki = testPki();
const upstream = await start(children, process.execPath, [path.join(ROOT, "bench", "upstream.mts"), path.join(pki.dir, "server.pem"), path.join(pki.dir, "server.key"), ...(HTTP1 ? ["--http1"] : [])], {}, (l) => typeof l.port === "number");
const tokens = Array.from({ length: AGENTS }, (_, i) => `ocp_soak${String(i).padStart(4, "0")}${"s".repeat(40)}`);
const keyProxyEnv = {
    ...processEnvOf("keyProxy"),
    KEYPROXY_CONFIG: JSON.stringify({
        listen: { host: "127.0.0.1", port: 0 },
        admin: [{ host: "127.0.0.1", port: 0 }],
        upstreams: { anthropic: { baseUrl: `https://localhost:${upstream.line.port}` } },
        extraCaFile: pki.caFile,
        registryDir: path.join(work, "agents"),
        auditDir: path.join(work, "audit"),
        // Over HTTP/1.1 (`--http1`) each stream holds an upstream connection: the pool must hold them all.
        limits: { maxUpstreamConnections: STREAMS },
        metering: { ledgerFile: path.join(work, "ledger.log") },
    }),
    KEYPROXY_KEY_ANTHROPIC: "soak-upstream-key",
};
const keyProxyBundle = otherBundle ?? (await bundle("keyProxy"));
for (const [i, token] of tokens.entries()) {
    execFileSync(process.execPath, [keyProxyBundle, "register"], {
        input: JSON.stringify({ name: `soak-${i}`, credentialSha256: credentialDigest(token), subnet: "127.0.0.0/8", budget: { totalUsd: 1_000_000 } }),
        env: { PATH: process.env.PATH, ...keyProxyEnv },
    });
}
/** KeyProxy's access lines, read as they come: outcomes by status and kind. */
const accessLines = new Map<string, number>();
const keyProxy = await start(children, process.execPath, [keyProxyBundle, "serve"], keyProxyEnv, (l) => l.event === "listening", (line) => {
    if (line.event !== "request") return;
    const key = `${line.status} ${line.outcome}${line.cost_usd > 0 ? "" : " unbilled"}`;
    accessLines.set(key, (accessLines.get(key) ?? 0) + 1);
});
const pid = keyProxy.child.pid!;
const port: number = keyProxy.line.port;
const adminPort = Number(keyProxy.line.admin);

async function scrape(): Promise<{ active: number; reservations: number; heapMb: number; externalMb: number }> {
    const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    const sum = (name: string) => [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))].reduce((s, m) => s + Number(m[1]), 0);
    return {
        active: sum("keyproxy_active_streams"),
        reservations: sum("keyproxy_reservations_outstanding"),
        heapMb: sum("keyproxy_nodejs_heap_size_used_bytes") / 2 ** 20,
        externalMb: sum("keyproxy_nodejs_external_memory_bytes") / 2 ** 20,
    };
}

// ---------------------------------------------------------------------------------------------- streams
interface Stream {
    lastEvent: number;
    events: number;
    done: boolean;
    error?: string;
}
const streams: Stream[] = [];
const errors: string[] = [];
const chunks = Math.ceil((SECONDS * 1000) / EVENT_INTERVAL_MS);

function open(index: number): Promise<void> {
    const stream: Stream = { lastEvent: 0, events: 0, done: false };
    streams.push(stream);
    const fail = (message: string) => {
        if (stream.done) return;
        stream.done = true;
        stream.error = message;
        errors.push(message);
    };
    return new Promise((resolve) => {
        const req = http.request(
            {
                host: "127.0.0.1",
                port,
                method: "POST",
                path: `/anthropic/v1/messages?chunks=${chunks}&interval=${EVENT_INTERVAL_MS}&size=64`,
                headers: { "x-api-key": tokens[index % AGENTS], "content-type": "application/json" },
                agent: false,
            },
            (res) => {
                if (res.statusCode !== 200) fail(`status ${res.statusCode}`);
                let text = "";
                res.on("data", (chunk: Buffer) => {
                    stream.lastEvent = performance.now();
                    const piece = chunk.toString("latin1");
                    stream.events += piece.split("event: content_block_delta").length - 1;
                    text = (text + piece).slice(-64);
                    resolve();
                });
                res.on("end", () => {
                    if (!text.includes("message_stop")) fail("ended without message_stop");
                    stream.done = true;
                });
                res.on("error", (error) => fail(error.message));
            },
        );
        req.on("error", (error) => {
            fail(error.message);
            resolve();
        });
        req.end(MESSAGE);
    });
}

progress(`KeyProxy up (pid ${pid}); ${AGENTS} agents of ${PER_AGENT} concurrent streams each`);
await sleep(1000);
const before = { fds: openDescriptors(pid), rss: rssMb([pid]) };
const cpuBefore = cpuSeconds([pid]);
/** `at`: seconds since the first stream opened. */
const samples: { at: number; rss: number; heapMb: number; externalMb: number; fds: number; open: number; flowing: number; active: number }[] = [];

const soakStarted = performance.now();
async function sample() {
    const now = performance.now();
    const { active, heapMb, externalMb } = await scrape();
    const s = {
        heapMb,
        externalMb,
        at: (now - soakStarted) / 1000,
        rss: rssMb([pid]),
        fds: openDescriptors(pid),
        open: streams.filter((x) => !x.done).length,
        // Received an event in the last sampling window: flowing, not merely open.
        flowing: streams.filter((x) => !x.done && now - x.lastEvent <= SAMPLE_MS).length,
        active,
    };
    samples.push(s);
    progress(`rss ${s.rss.toFixed(1)} MB, heap used ${heapMb.toFixed(1)} MB, fds ${s.fds}, open ${s.open}, flowing ${s.flowing}, proxy active ${s.active}, errors ${errors.length}`);
}

const sampler = setInterval(() => void sample(), SAMPLE_MS);
for (let i = 0; i < STREAMS; i += RAMP_BATCH) {
    await Promise.all(Array.from({ length: Math.min(RAMP_BATCH, STREAMS - i) }, (_, j) => open(i + j)));
}
const rampSeconds = (performance.now() - soakStarted) / 1000;
progress(`${STREAMS} streams open in ${rampSeconds.toFixed(1)} s`);
while (streams.some((s) => !s.done)) await sleep(250);
clearInterval(sampler);
const cpu = cpuSeconds([pid]) - cpuBefore;
const soakSeconds = (performance.now() - soakStarted) / 1000;
await sleep(500);
const afterStreams = { fds: openDescriptors(pid), rss: rssMb([pid]), ...(await scrape()) };
const heapBefore = samples.length > 0 ? samples[0].heapMb : Number.NaN;
progress(`all streams ended; fds ${afterStreams.fds}; waiting for the upstream keep-alive connections to close`);
const idleFrom = performance.now();
while (openDescriptors(pid) > before.fds && performance.now() - idleFrom < KEEP_ALIVE_GRACE_MS) await sleep(1000);
const afterIdle = { fds: openDescriptors(pid), rss: rssMb([pid]), seconds: (performance.now() - idleFrom) / 1000, ...(await scrape()) };

// ---------------------------------------------------------------------------------------------- report
// Every stream is open and sending from the end of the ramp until the first one finishes its events.
const steady = samples.filter((s) => s.at >= rampSeconds && s.at < (chunks * EVENT_INTERVAL_MS) / 1000);
const minFlowing = Math.min(...steady.map((s) => s.flowing));
const peak = { rss: Math.max(...samples.map((s) => s.rss)), fds: Math.max(...samples.map((s) => s.fds)) };
const events = streams.reduce((sum, s) => sum + s.events, 0);
const f = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");
const lines = [
    "# KeyProxy soak",
    "",
    `Command: \`npm run bench:soak${args.length > 0 ? ` -- ${args.join(" ")}` : ""}\` (bench/soak.mts), ${new Date().toISOString().slice(0, 10)}.`,
    `Machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "unknown"}), ${Math.round(os.totalmem() / 2 ** 30)} GiB; Node ${process.version}; KeyProxy as its production bundle (\`${processEnvOf("keyProxy").NODE_OPTIONS}\`, glibc\'s allocator as in its container).`,
    "",
    `${STREAMS} metered \`POST /anthropic/v1/messages\` SSE streams through KeyProxy at once, each ${chunks} events ${EVENT_INTERVAL_MS} ms apart`,
    `(about ${SECONDS} s), from the mock HTTPS upstream (\`bench/upstream.mts\`, ${HTTP1 ? "HTTP/1.1 only" : "HTTP/2"}) on loopback. ${AGENTS} agents with the default ${PER_AGENT}`,
    `concurrent streams each; \`limits.maxUpstreamConnections\` ${STREAMS}. Budgets and the fsynced ledger on. KeyProxy's log is read as it is written.`,
    "",
    "| measure | value |",
    "| --- | ---: |",
    `| errors (client side: status, cut or unfinished streams) | ${errors.length} |`,
    `| access lines, by status, outcome | ${[...accessLines].map(([k, v]) => `${k}: ${v}`).join(", ")} |`,
    `| streams open, all at once (ramp ${f(rampSeconds)} s, ${RAMP_BATCH} at a time) | ${Math.max(...samples.map((s) => s.open))} |`,
    `| streams flowing at once (an event in the last ${SAMPLE_MS / 1000} s), lowest steady sample | ${minFlowing} |`,
    `| KeyProxy's keyproxy_active_streams at its highest | ${Math.max(...samples.map((s) => s.active))} |`,
    `| events delivered | ${events} of ${STREAMS * chunks} |`,
    `| KeyProxy CPU-seconds over the soak (${f(soakSeconds)} s) | ${f(cpu, 2)} (${f((cpu * 1000) / Math.max(1, events), 3)} CPU-ms per event) |`,
    `| RSS MB: before / peak / after the streams / after idle | ${f(before.rss)} / ${f(peak.rss)} / ${f(afterStreams.rss)} / ${f(afterIdle.rss)} |`,
    `| V8 heap used MB: first sample / highest / after the streams / after idle | ${f(heapBefore)} / ${f(Math.max(...samples.map((s) => s.heapMb)))} / ${f(afterStreams.heapMb)} / ${f(afterIdle.heapMb)} |`,
    `| file descriptors: before / peak / after the streams / after the upstream keep-alive closed (${f(afterIdle.seconds, 0)} s) | ${before.fds} / ${peak.fds} / ${afterStreams.fds} / ${afterIdle.fds} |`,
    `| after: active streams, outstanding reservations | ${afterStreams.active}, ${afterStreams.reservations} |`,
    "",
    "Every 5 s (V8 heap used and external memory from KeyProxy's own metrics):",
    "",
    "| t s | RSS MB | heap used MB | external MB | fds | open | flowing |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...samples.map((s) => `| ${f(s.at, 0)} | ${f(s.rss)} | ${f(s.heapMb)} | ${f(s.externalMb)} | ${s.fds} | ${s.open} | ${s.flowing} |`),
];
if (errors.length > 0) lines.push("", "First errors:", "", ...[...new Set(errors)].slice(0, 10).map((e) => `- ${e}`));
writeFileSync(out, `${lines.join("\n")}\n`);
progress(`wrote ${path.relative(process.cwd(), out)}`);
const leaked = afterIdle.fds > before.fds || afterStreams.active > 0 || afterStreams.reservations > 0;
process.exit(errors.length > 0 || minFlowing < STREAMS || leaked ? 1 : 0);
