// A fixed-arrival-rate (open-loop) load generator: request i is due at start + i / rate whether or not earlier
// ones have answered, and its latency is measured from that due time, so a stall shows in every request it
// delays (no coordinated omission). Runs as its own process so the benchmark's driver stays free to read logs.
//   node bench/openloop.mts '<json: {url, method, headers, body?, rate, seconds, connections, announceWarm?}>'
// Prints one JSON line: {sent, completed, failed, late, p50, p99, p999} (milliseconds). With announceWarm it first
// prints {"event":"warm"} once its connections are open, so a caller can start its CPU reading there.
import { Pool } from "undici";

interface Options {
    url: string;
    method: "GET" | "POST";
    headers: Record<string, string>;
    body?: string;
    rate: number;
    seconds: number;
    connections: number;
    announceWarm?: boolean;
}

const options = JSON.parse(process.argv[2]) as Options;
const url = new URL(options.url);
// The benchmark's upstream has a test certificate; the generator checks nothing about it.
const pool = new Pool(url.origin, { connections: options.connections, connect: { rejectUnauthorized: false } });
const total = Math.round(options.rate * options.seconds);
const latencies: number[] = [];
let failed = 0;
/** Requests that could not even be sent on time (the generator itself fell behind by over 1 ms). */
let late = 0;

async function send(due: number) {
    try {
        const { statusCode, body } = await pool.request({ method: options.method, path: url.pathname + url.search, headers: options.headers, body: options.body });
        await body.dump();
        if (statusCode !== 200) failed++;
        else latencies.push(performance.now() - due);
    } catch {
        failed++;
    }
}

// Connections are opened before the clock starts (a TLS handshake storm is not what is measured).
await Promise.all(Array.from({ length: 32 }, () => pool.request({ method: options.method, path: url.pathname + url.search, headers: options.headers, body: options.body }).then(({ body }) => body.dump())));
if (options.announceWarm) console.log(JSON.stringify({ event: "warm" }));
const started = performance.now() + 50;
const pending: Promise<void>[] = [];
let next = 0;
while (next < total) {
    const now = performance.now();
    while (next < total && started + (next * 1000) / options.rate <= now) {
        const due = started + (next * 1000) / options.rate;
        if (now - due > 1) late++;
        pending.push(send(due));
        next++;
    }
    const wait = started + (next * 1000) / options.rate - performance.now();
    await new Promise((resolve) => (wait > 1 ? setTimeout(resolve, wait - 0.5) : setImmediate(resolve)));
}
await Promise.all(pending);
latencies.sort((a, b) => a - b);
const percentile = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
await pool.close();
console.log(JSON.stringify({ sent: total, completed: latencies.length, failed, late, p50: percentile(0.5), p99: percentile(0.99), p999: percentile(0.999) }));
