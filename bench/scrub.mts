// What scrubbing secrets out of response bodies costs per streamed MB: the proxy's per-chunk work on a metered
// Anthropic stream (ResponseMeter) with and without the StreamScrubber behind it, in one process, interleaved.
// Run: npm run --silent bench:scrub > bench/scrub.md
import os from "node:os";
import { readFileSync } from "node:fs";
import path from "node:path";
import { ResponseMeter } from "../proxy-image/src/metering.ts";
import { credentialDigest } from "../proxy-image/src/policy.ts";
import { type ResponseSecrets, StreamScrubber } from "../proxy-image/src/scrub.ts";

const MB_PER_RUN = 64;
const ROUNDS = 7;
/** TLS records carry at most 16 KiB: the chunk size the proxy sees on a busy stream. */
const CHUNK = 16 * 1024;

const event = (name: string, data: object) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
// Content deltas of 400 characters of prose, with near misses of every secret's beginning (s, sk-, o, ocp).
const prose = "Sure: set the key in the settings, then ask the proxy; ocp and sk- look like secrets but are not. ".repeat(5).slice(0, 400);
const delta = event("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: prose } });
const stream = Buffer.from(
    event("message_start", { type: "message_start", message: { model: "claude-sonnet-4-5", usage: { input_tokens: 10, output_tokens: 1 } } }) +
        delta.repeat(Math.ceil((MB_PER_RUN * 1e6) / delta.length)) +
        event("message_delta", { type: "message_delta", usage: { output_tokens: 1 } }) +
        event("message_stop", { type: "message_stop" }),
);
const chunks = Array.from({ length: Math.ceil(stream.length / CHUNK) }, (_, i) => stream.subarray(i * CHUNK, (i + 1) * CHUNK));
// Two real keys and 32 registered agents, shaped as in production.
const digests = new Set(Array.from({ length: 32 }, (_, i) => credentialDigest(`ocp_${String(i).padStart(48, "a")}`)));
const secrets: ResponseSecrets = {
    literals: [`sk-ant-api03-${"k".repeat(95)}AA`, `sk-proj-${"k".repeat(156)}`].map((k) => Buffer.from(k)),
    isCredential: (sha256) => digests.has(sha256),
};

function cpuMsPerMb(scrub: boolean): number {
    const before = process.cpuUsage();
    const meter = new ResponseMeter("anthropic-messages", true, false);
    const scrubber = new StreamScrubber(secrets);
    let sent = 0;
    for (const chunk of chunks) for (const piece of meter.push(chunk)) sent += (scrub ? scrubber.push(piece) : piece).length;
    sent += scrub ? scrubber.end().length : 0;
    if (sent !== stream.length || meter.end().result.usage.output !== 1) throw new Error("the pipeline lost bytes or usage");
    const used = process.cpuUsage(before);
    return (used.user + used.system) / 1000 / (stream.length / 1e6);
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
cpuMsPerMb(true); // warm up both paths
cpuMsPerMb(false);
const runs: Record<"off" | "on", number[]> = { off: [], on: [] };
const ratios: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? (["off", "on"] as const) : (["on", "off"] as const);
    const result: Partial<Record<"off" | "on", number>> = {};
    for (const kind of order) result[kind] = cpuMsPerMb(kind === "on");
    runs.off.push(result.off!);
    runs.on.push(result.on!);
    ratios.push(result.on! / result.off!);
}
const proxyLine = /metered, budget enforced.*\| ([\d.]+) \|/.exec(readFileSync(path.join(import.meta.dirname, "results.md"), "utf8"));
const proxyMs = proxyLine ? Number(proxyLine[1]) : undefined;
const added = median(runs.on) - median(runs.off);
const f = (n: number) => n.toFixed(3);
console.log(`# Scrubbing secrets from response bodies: CPU per streamed MB

Command: \`npm run --silent bench:scrub > bench/scrub.md\` (${ROUNDS} interleaved rounds of ${MB_PER_RUN} MB each way, ${CHUNK / 1024} KiB chunks,
Anthropic SSE with 400-character deltas of prose, 2 real keys and 32 registered agents).
Machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "unknown"}), Node ${process.version}. CPU is this process's user + system time.

| per-chunk work on a metered stream | CPU-ms per MB (median) |
| --- | ---: |
| metering only (scrub off) | ${f(median(runs.off))} |
| metering + scrubbing (scrub on) | ${f(median(runs.on))} |

Ratio on/off (median of per-round ratios): **${median(ratios).toFixed(2)}x**; the scrub adds ${f(added)} CPU-ms per MB.${
    proxyMs === undefined ? "" : `
Against the whole proxy's ${f(proxyMs)} CPU-ms per metered MB (bench/results.md: TLS both ways, HTTP, metering), that is ${((added / proxyMs) * 100).toFixed(1)} %.`
}`);
