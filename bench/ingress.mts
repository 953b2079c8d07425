// The Ingress benchmark: a chat request through the Ingress's production bundle (TLS, bearer token, the default
// prompt-injection rules), beside the same request direct to the agent's gateway and through KeyProxy's bundle on a
// metered route, at fixed arrival rates, interleaved in rounds. Traffic stays on 127.0.0.1. Usage: see USAGE.
import { type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Pool } from "undici";
import { tokenDigest } from "../ingress-image/src/policy.ts";
import { DEFAULT_RULES, applyRules, compileRules } from "../ingress-image/src/rules.ts";
import { keyEnv } from "../providers/index.ts";
import { credentialDigest } from "../proxy-image/src/policy.ts";
import { removeTempDirs, tempDir } from "../test/support/tempDirs.ts";
import { testPki } from "../test/support/tls.ts";
import { cpuSeconds, percentile, processEnvOf, rssMb, running, start, startBundle, stopChildren } from "./processes.mts";

const USAGE = `usage: npm run bench:ingress [-- --quick] [-- --out FILE]

  (no flags)   the full run (about 4 minutes): writes bench/ingress.md
  --quick      a short run (about 40 s) that proves every path still runs; its numbers mean little, so the report
               goes to standard output (or to --out FILE), never to bench/ingress.md
  --out FILE   write the report to FILE instead
  --help       this text`;

const ROOT = path.resolve(import.meta.dirname, "..");
const args = process.argv.slice(2);
if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    process.exit(0);
}
const outIndex = args.indexOf("--out");
const outFile = outIndex >= 0 ? args[outIndex + 1] : undefined;
const unknown = args.find((arg, i) => arg !== "--quick" && arg !== "--out" && (outIndex < 0 || i !== outIndex + 1));
if (unknown !== undefined || (outIndex >= 0 && (outFile === undefined || outFile.startsWith("-")))) {
    console.error(`error: ${unknown !== undefined ? `unknown argument ${unknown}` : "--out needs a file"}\n\n${USAGE}`);
    process.exit(2);
}
const quick = args.includes("--quick");
const out = outFile !== undefined ? path.resolve(outFile) : quick ? undefined : path.join(ROOT, "bench", "ingress.md");
const P = quick ? { rates: [200, 500], seconds: 1, rounds: 1, streams: 20, ruleCalls: 2_000 } : { rates: [200, 500], seconds: 4, rounds: 5, streams: 200, ruleCalls: 20_000 };
/** The open-loop generator's connections per path (it opens 32 before its clock starts, the rest if it falls behind). */
const CONNECTIONS = 64;

const USER_TOKEN = `oci_${"bench".repeat(10)}ab`;
const STANDIN_TOKEN = "bench-gateway-token-0123456789";
const AGENT_TOKEN = "ocp_benchbenchbenchbenchbenchbenchbenchbenchbenchbe";
const work = tempDir("openclaw-bench-ingress");
const children: ChildProcess[] = [];
const began = performance.now();
const loadAtStart = os.loadavg()[0];
const progress = (message: string) => console.error(`[bench:ingress ${((performance.now() - began) / 1000).toFixed(1)}s] ${message}`);
const median = (values: number[]) => percentile(values, 0.5);
process.on("exit", () => {
    for (const child of children.filter(running)) child.kill("SIGTERM");
    removeTempDirs();
});
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

// ---------------------------------------------------------------------------------------------- set-up
const pki = testPki();
progress("starting the stand-in gateway, two Ingresses (default rules, no rules) and KeyProxy");
const gateway = await start(children, process.execPath, [path.join(ROOT, "bench", "chatGateway.mts")], {}, (l) => typeof l.port === "number");
const gatewayPort: number = gateway.line.port;

/** An Ingress bundle in front of the stand-in, with one agent and one user who may reach it; limits out of the way. */
async function startIngress(name: string, rules?: []) {
    const env = {
        ...processEnvOf("ingress"),
        INGRESS_CONFIG: JSON.stringify({
            listen: { host: "127.0.0.1", port: 0 },
            admin: [{ host: "127.0.0.1", port: 0 }],
            dataDir: path.join(work, name),
            ...(rules ? { rules } : {}),
            limits: { ratePerSecond: 1_000_000, burst: 1_000_000, maxConcurrentPerUser: 100_000 },
        }),
        INGRESS_TLS_CERT_PEM: pki.cert,
        INGRESS_TLS_KEY_PEM: pki.key,
    };
    const { child, line } = await startBundle(children, "ingress", env, [
        { entry: { name: "bart", gateway: { host: "127.0.0.1", port: gatewayPort } } },
        { verb: "register-user", entry: { name: "ann", tokenSha256: tokenDigest(USER_TOKEN), agents: ["bart"] } },
    ]);
    return { pid: child.pid!, port: line.port as number };
}
const ingress = await startIngress("ingress");
const ingressNoRules = await startIngress("ingress-no-rules", []);

const keyProxy = await startBundle(
    children,
    "keyProxy",
    {
        ...processEnvOf("keyProxy"),
        KEYPROXY_CONFIG: JSON.stringify({
            listen: { host: "127.0.0.1", port: 0 },
            admin: [{ host: "127.0.0.1", port: 0 }],
            upstreams: { openai: { baseUrl: `http://127.0.0.1:${gatewayPort}` } },
            registryDir: path.join(work, "keyproxy-agents"),
            auditDir: path.join(work, "keyproxy-audit"),
            limits: { maxConcurrentPerAgent: 100_000 },
            metering: { ledgerFile: path.join(work, "ledger.log") },
        }),
        [keyEnv("openai")]: "bench-upstream-key",
    },
    [{ entry: { name: "bart", credentialSha256: credentialDigest(AGENT_TOKEN), subnet: "127.0.0.0/8", budget: { totalUsd: 1_000_000 } } }],
);

// ----------------------------------------------------------------------------------------------- paths
/** About 1.5 KB of ordinary user text: what the rules read on every request. None of it matches a rule. */
const USER_TEXT = [
    "I am preparing the quarterly operations review for our logistics team and need help turning my notes into a clear summary.",
    "Our warehouse in the north handled about twelve percent more parcels than in the previous quarter, mostly because two large",
    "retail customers moved their seasonal volume earlier. Average time from order to dispatch went from 31 hours to 27 hours after",
    "we changed the picking routes and added a second afternoon shift. Returns processing is still slow: the backlog peaked at",
    "about 4,000 items in the second month and is now around 1,500. We replaced three of the older forklifts and had no lost-time",
    "injuries this quarter, which is the first time in two years. Fuel costs were up six percent, partly offset by the new routing",
    "software that cut empty kilometres by roughly nine percent. Staff turnover in the evening shift remains high, and exit",
    "interviews mention the commute and the lack of a canteen. For next quarter we plan to pilot a returns triage station, start",
    "the canteen project, and renegotiate the fuel contract. Please write a summary of about 200 words for the leadership team,",
    "with three bullet points for risks and three for next steps, in a neutral and factual tone, and suggest a title for the slide.",
].join(" ");
const chatBody = (stream: boolean) =>
    JSON.stringify({
        model: "gpt-4o-mini",
        max_tokens: 400,
        stream,
        messages: [
            { role: "system", content: "You are a helpful assistant for an operations team. Answer concisely and keep numbers exact." },
            { role: "user", content: USER_TEXT },
        ],
    });
const BODY = chatBody(false);
const STREAM_BODY = chatBody(true);

// ------------------------------------------------------------------------------- the rules, in process
/** CPU-seconds per 10,000 calls of applyRules on the benchmark's parsed body, in this process, with no network. */
function rulesCpuPer10k(rules: ReturnType<typeof compileRules>): number {
    const body = JSON.parse(BODY);
    const before = process.cpuUsage();
    for (let i = 0; i < P.ruleCalls; i++) if (applyRules(body, rules).kind !== "forward") throw new Error("a rule matched the benchmark's body");
    const used = process.cpuUsage(before);
    return ((used.user + used.system) / 1e6 / P.ruleCalls) * 10_000;
}
progress(`applyRules in process, ${P.ruleCalls} calls each, default rules against none, 3 rounds`);
const compiledDefault = compileRules(DEFAULT_RULES);
const inProcess = { default: [] as number[], none: [] as number[] };
for (let round = 0; round < 3; round++) {
    inProcess.default.push(rulesCpuPer10k(compiledDefault));
    inProcess.none.push(rulesCpuPer10k([]));
}
const perRule = compiledDefault.map((rule) => ({ id: rule.id, cpuPer10k: median([0, 1, 2].map(() => rulesCpuPer10k([rule]))) }));

interface Path {
    name: string;
    origin: string;
    /** The driver's own connections, for the SSE streams. */
    pool: Pool;
    path: string;
    headers: Record<string, string>;
    /** The proxy's own process, whose CPU and memory are read (none for direct). */
    pid?: number;
}
/** A path to `origin` (TLS trusting the test CA when https), with the pool the SSE streams use. */
const pathTo = (name: string, origin: string, target: string, token: string, pid?: number): Path => ({
    name,
    origin,
    pool: new Pool(origin, origin.startsWith("https:") ? { connect: { ca: pki.ca } } : {}),
    path: target,
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    pid,
});
const PATHS: Path[] = [
    pathTo("direct", `http://127.0.0.1:${gatewayPort}`, "/v1/chat/completions", STANDIN_TOKEN),
    pathTo("Ingress", `https://127.0.0.1:${ingress.port}`, "/agents/bart/v1/chat/completions", USER_TOKEN, ingress.pid),
    pathTo("Ingress, rules: []", `https://127.0.0.1:${ingressNoRules.port}`, "/agents/bart/v1/chat/completions", USER_TOKEN, ingressNoRules.pid),
    pathTo("KeyProxy", `http://127.0.0.1:${keyProxy.line.port}`, "/openai/v1/chat/completions", AGENT_TOKEN, keyProxy.child.pid!),
];

// --------------------------------------------------------------------------------- fixed-rate requests
interface Phase {
    p50: number;
    p99: number;
    cpuPer10k: number;
    rss: number;
}
const phases: Record<number, Record<string, Phase[]>> = {};
const idleRss = Object.fromEntries(PATHS.filter((p) => p.pid).map((p) => [p.name, rssMb([p.pid!])]));

/**
 * One phase of `bench/openloop.mts` (its own process) against a path. The proxy's CPU is read from when the
 * generator's connections are open (TLS handshakes excluded) to when it exits.
 */
async function phase(target: Path, rate: number, seconds: number): Promise<Phase> {
    const pids = target.pid ? [target.pid] : [];
    const options = { url: target.origin + target.path, method: "POST", headers: target.headers, body: BODY, rate, seconds, connections: CONNECTIONS, announceWarm: true };
    let result: { completed: number; failed: number; p50: number; p99: number } | undefined;
    const generator = await start(children, process.execPath, [path.join(ROOT, "bench", "openloop.mts"), JSON.stringify(options)], {}, (l) => l.event === "warm", (l) => {
        if (l.event !== "warm") result = l as typeof result;
    });
    const before = cpuSeconds(pids);
    await once(generator.child, "close");
    const cpu = cpuSeconds(pids) - before;
    if (!result || result.failed > 0) throw new Error(`${target.name} at ${rate}/s: ${result ? `${result.failed} failed requests` : "the generator reported nothing"}`);
    return { p50: result.p50, p99: result.p99, cpuPer10k: (cpu / result.completed) * 10_000, rss: pids.length ? rssMb(pids) : NaN };
}

progress("warming up every path (1 s at each rate)");
for (const target of PATHS) for (const rate of P.rates) await phase(target, rate, 1);
for (let round = 0; round < P.rounds; round++) {
    // Each round starts at a different path, so no path always follows the same one.
    const order = PATHS.map((_, i) => PATHS[(i + round) % PATHS.length]);
    for (const rate of P.rates) {
        for (const target of order) {
            progress(`${target.name}, ${rate} requests/s for ${P.seconds} s, round ${round + 1}`);
            ((phases[rate] ??= {})[target.name] ??= []).push(await phase(target, rate, P.seconds));
        }
    }
}

// ------------------------------------------------------------------------------- SSE: time to first byte
interface StreamRun {
    ttfb: number;
    total: number;
}
async function stream(target: Path): Promise<StreamRun> {
    const sent = performance.now();
    const answer = await target.pool.request({ method: "POST", path: target.path, headers: target.headers, body: STREAM_BODY });
    if (answer.statusCode !== 200) throw new Error(`${target.name} stream: ${answer.statusCode} ${await answer.body.text()}`);
    let ttfb = NaN;
    let text = "";
    for await (const part of answer.body) {
        if (Number.isNaN(ttfb)) ttfb = performance.now() - sent;
        text += part.toString();
    }
    if (!text.endsWith("data: [DONE]\n\n")) throw new Error(`${target.name} stream ended early`);
    return { ttfb, total: performance.now() - sent };
}
const streams: Record<string, StreamRun[]> = {};
for (let round = 0; round < P.rounds; round++) {
    for (const target of PATHS.map((_, i) => PATHS[(i + round) % PATHS.length])) {
        progress(`${P.streams / P.rounds | 0} SSE streams one after another through ${target.name}, round ${round + 1}`);
        for (let i = 0; i < Math.ceil(P.streams / P.rounds); i++) (streams[target.name] ??= []).push(await stream(target));
    }
}

// ------------------------------------------------------------------------------------------- report
await Promise.all(PATHS.map((p) => p.pool.close()));
const f = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");
const med = (rate: number, name: string, key: keyof Phase) => median(phases[rate][name].map((r) => r[key]));
const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
const lines: string[] = [];
lines.push(`# The Ingress beside KeyProxy${quick ? " (quick mode: proves the benchmark runs; numbers are not meaningful)" : ""}`, "");
lines.push(`Command: \`npm run bench:ingress${quick ? " -- --quick" : ""}\` (bench/ingress.mts), ${new Date().toISOString().slice(0, 10)}.`);
lines.push(`Machine: ${os.cpus().length} cores (${cpuModel}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}; Node ${process.version}; services as their production bundles with their containers' default Node options (Ingress \`${processEnvOf("ingress").NODE_OPTIONS}\`, KeyProxy \`${processEnvOf("keyProxy").NODE_OPTIONS}\`). Load average (1 min) at the start ${f(loadAtStart, 1)}, at the end ${f(os.loadavg()[0], 1)}: the machine is shared with other work.`);
lines.push(
    "",
    "One chat request, `POST /v1/chat/completions` with about 1.5 KB of user text (non-streaming; a short SSE stream",
    "for time to first byte), answered at once by a stand-in for the agent's OpenClaw gateway (`bench/chatGateway.mts`,",
    "plain HTTP, its own process). The paths: **direct** to the stand-in; through the **Ingress** (TLS from the client",
    "with keep-alive, a valid user token, the default prompt-injection rules applied, forwarded to the stand-in as the",
    "agent's gateway); the same Ingress with **`rules: []`** (a second instance), to price the rules; and through",
    "**KeyProxy** on its metered OpenAI route (`/openai/v1/chat/completions`, budget enforced, fsynced ledger) with the",
    "stand-in as the provider. KeyProxy is here for scale, not as an alternative: in a deployment a chat request",
    "crosses both (Ingress to the agent, the agent to KeyProxy to the provider).",
    "",
    "Load is open-loop at a fixed arrival rate (`bench/openloop.mts`, its own process): each request is due at its slot whether or not",
    "earlier ones have answered, and its latency is measured from that scheduled time, so queueing shows. Everything",
    "shares 2 cores with the load generator (which also does the client's TLS), so the comparable numbers are latency",
    "added over direct at the same offered load and each proxy's own CPU time (`/proc/<pid>/task/*/schedstat`, every",
    `thread) per 10,000 requests. ${P.rounds} rounds of ${P.seconds} s per path and rate, the starting path rotating each`,
    "round, after a 1 s warm-up per path and rate. The generator opens its connections before its clock starts and the",
    "proxy's CPU is read from then, so TLS handshakes are in neither latency nor CPU. The median round is reported.",
    "",
);
lines.push("## Added latency over direct, at a fixed arrival rate", "");
lines.push("| requests/s | direct p50 / p99 ms | Ingress added p50 / p99 ms | Ingress `rules: []` added p50 / p99 ms | KeyProxy added p50 / p99 ms |", "| ---: | ---: | ---: | ---: | ---: |");
const added = (rate: number, name: string) => `${f(med(rate, name, "p50") - med(rate, "direct", "p50"), 3)} / ${f(med(rate, name, "p99") - med(rate, "direct", "p99"), 3)}`;
for (const rate of P.rates) lines.push(`| ${rate} | ${f(med(rate, "direct", "p50"), 3)} / ${f(med(rate, "direct", "p99"), 3)} | ${added(rate, "Ingress")} | ${added(rate, "Ingress, rules: []")} | ${added(rate, "KeyProxy")} |`);

lines.push("", "## CPU-seconds per 10,000 requests (the proxy's own process)", "");
lines.push("| requests/s | Ingress, default rules | Ingress, `rules: []` | the rules alone | KeyProxy, metered |", "| ---: | ---: | ---: | ---: | ---: |");
/** The rules' cost, paired within each round (default rules minus none), so drift between rounds cancels. */
const rulesCost = (rate: number) => median(phases[rate].Ingress.map((r, i) => r.cpuPer10k - phases[rate]["Ingress, rules: []"][i].cpuPer10k));
for (const rate of P.rates) {
    lines.push(`| ${rate} | ${f(med(rate, "Ingress", "cpuPer10k"), 3)} | ${f(med(rate, "Ingress, rules: []", "cpuPer10k"), 3)} | ${f(rulesCost(rate), 3)} (${f((rulesCost(rate) / med(rate, "Ingress", "cpuPer10k")) * 100, 0)} %) | ${f(med(rate, "KeyProxy", "cpuPer10k"), 3)} |`);
}

lines.push(
    "",
    `In process, with no network: \`applyRules\` with the default rules on this body costs **${f(median(inProcess.default), 3)}** CPU-seconds per`,
    `10,000 requests (${f(median(inProcess.default) * 100, 1)} µs each; with \`rules: []\`: ${f(median(inProcess.none), 3)}), median of 3 runs of ${P.ruleCalls} calls. Each`,
    "default rule alone, CPU-seconds per 10,000 requests:",
    "",
    "| rule | CPU-s per 10k | µs per request |",
    "| --- | ---: | ---: |",
    ...perRule.map((r) => `| \`${r.id}\` | ${f(r.cpuPer10k, 3)} | ${f(r.cpuPer10k * 100, 1)} |`),
);

lines.push("", "## Resident memory", "");
lines.push("| process | idle RSS MB (after start) | RSS MB after the last round at the highest rate |", "| --- | ---: | ---: |");
const top = P.rates[P.rates.length - 1];
for (const name of ["Ingress", "Ingress, rules: []", "KeyProxy"]) lines.push(`| ${name} | ${f(idleRss[name], 1)} | ${f(phases[top][name].at(-1)!.rss, 1)} |`);

lines.push("", `## SSE: time to first byte (${P.rounds * Math.ceil(P.streams / P.rounds)} streams per path, one at a time, 10 chunks each)`, "");
lines.push("| path | time to first byte p50 / p99 ms | added p50 / p99 ms | whole stream p50 ms |", "| --- | ---: | ---: | ---: |");
const ttfb = (name: string, q: number) => percentile(streams[name].map((s) => s.ttfb), q);
for (const target of PATHS) {
    const name = target.name;
    lines.push(`| ${name} | ${f(ttfb(name, 0.5), 3)} / ${f(ttfb(name, 0.99), 3)} | ${name === "direct" ? "-" : `${f(ttfb(name, 0.5) - ttfb("direct", 0.5), 3)} / ${f(ttfb(name, 0.99) - ttfb("direct", 0.99), 3)}`} | ${f(median(streams[name].map((s) => s.total)), 3)} |`);
}

await stopChildren(children);
removeTempDirs();
if (out === undefined) process.stdout.write(`${lines.join("\n")}\n`);
else {
    writeFileSync(out, `${lines.join("\n")}\n`);
    progress(`wrote ${path.relative(process.cwd(), out)}`);
}
process.exit(0);
