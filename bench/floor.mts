// The floor of a proxy on Node: node:http in front, undici's dispatch API behind, the key attached, the body passed
// through, nothing else (no route checks, credential, metering, budget, ledger, log line or metrics). What KeyProxy
// costs above this is its own work; what this costs is what any Node proxy pays before doing any of it.
// Metered (a credential's sha256 and a ledger file given), it also does the least any metering proxy must do for
// each request: check the credential's digest, parse the request for its plan, hold a budget reservation, read the
// usage from the answer, settle the cost, append the settlement to a ledger (batched, fdatasync'd off the event
// loop), write an access line (batched) and count the request. What KeyProxy costs above that is the rest of its
// policy (routes, scrubbing, audit, metrics with labels, per-agent state), and its own overhead.
//   node bench/floor.mts <upstream origin> <caFile> <key> [<credentialSha256> <ledgerFile>]   (prints {"port":N})
import { createHash, timingSafeEqual } from "node:crypto";
import { fdatasync, openSync, readFileSync, write } from "node:fs";
import http from "node:http";
import { promisify } from "node:util";
import { Pool } from "undici";

const [origin, caFile, key, credentialSha256, ledgerFile] = process.argv.slice(2);
const writeAsync = promisify(write);
const fdatasyncAsync = promisify(fdatasync);
const pool = new Pool(origin, { connections: 2048, connect: { ca: readFileSync(caFile, "utf8"), servername: "localhost" } });

/** The metered floor's state: one agent, its budget, its ledger and its counters. */
class Metering {
    private readonly digest: Buffer;
    private readonly ledger: number;
    private spentUsd = 0;
    private reservedUsd = 0;
    private settlements: string[] = [];
    private flushing = false;
    private lines: string[] = [];
    requests = 0;

    constructor(digestHex: string, ledgerPath: string) {
        this.digest = Buffer.from(digestHex, "hex");
        this.ledger = openSync(ledgerPath, "a", 0o600);
    }

    admits(credential: string | string[] | undefined): boolean {
        return typeof credential === "string" && timingSafeEqual(createHash("sha256").update(credential).digest(), this.digest);
    }

    /** The reservation for a request's plan (its output tokens at a list price), or undefined past the budget. */
    reserve(body: Buffer): number | undefined {
        const plan = JSON.parse(body.toString("utf8")) as { model?: string; max_tokens?: number };
        const reservation = ((plan.max_tokens ?? 4096) * 15) / 1e6;
        if (this.spentUsd + this.reservedUsd + reservation > 1_000_000) return undefined;
        this.reservedUsd += reservation;
        return reservation;
    }

    settle(reservation: number, answer: Buffer[], status: number, started: number) {
        const usage = (JSON.parse(Buffer.concat(answer).toString("utf8")) as { usage?: { input_tokens?: number; output_tokens?: number } }).usage ?? {};
        const costUsd = ((usage.input_tokens ?? 0) * 3 + (usage.output_tokens ?? 0) * 15) / 1e6;
        this.reservedUsd -= reservation;
        this.spentUsd += costUsd;
        this.requests++;
        this.settlements.push(`${JSON.stringify({ agent: "bench", costUsd })}\n`);
        if (!this.flushing) {
            this.flushing = true;
            setTimeout(() => void this.flushLedger(), 50);
        }
        if (this.lines.length === 0) setImmediate(() => this.flushLines());
        this.lines.push(JSON.stringify({ event: "request", status, costUsd, ms: performance.now() - started }));
    }

    private async flushLedger() {
        const bytes = Buffer.from(this.settlements.join(""));
        this.settlements = [];
        try {
            await writeAsync(this.ledger, bytes);
            await fdatasyncAsync(this.ledger);
        } finally {
            this.flushing = false;
        }
    }

    private flushLines() {
        process.stdout.write(`${this.lines.join("\n")}\n`);
        this.lines = [];
    }
}
const metering = credentialSha256 === undefined ? undefined : new Metering(credentialSha256, ledgerFile);

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    const started = performance.now();
    if (metering && !metering.admits(req.headers["x-api-key"])) {
        res.writeHead(401).end();
        return void req.resume();
    }
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
        const headers: Record<string, string> = { "content-type": "application/json", "x-api-key": key, host: "localhost" };
        const body = Buffer.concat(chunks);
        if (body.length > 0) headers["content-length"] = String(body.length);
        const reservation = metering?.reserve(body);
        if (metering && reservation === undefined) return void res.writeHead(429).end();
        /** The answer's bytes, kept for its usage when metered. */
        const answer: Buffer[] = [];
        let status = 0;
        pool.dispatch(
            { method: req.method as "POST", path: req.url!.replace(/^\/anthropic/, ""), headers, body },
            {
                onRequestStart() {},
                onResponseStart(_controller, statusCode, responseHeaders) {
                    status = statusCode;
                    const out: Record<string, string> = {};
                    for (const name of ["content-type", "content-length"]) if (typeof responseHeaders[name] === "string") out[name] = responseHeaders[name];
                    res.writeHead(statusCode, out);
                },
                onResponseData(controller, chunk) {
                    if (metering) answer.push(chunk);
                    if (!res.write(chunk)) {
                        controller.pause();
                        res.once("drain", () => controller.resume());
                    }
                },
                onResponseEnd() {
                    res.end();
                    if (metering) metering.settle(reservation!, answer, status, started);
                },
                onResponseError(_controller, error) {
                    if (!res.headersSent) res.writeHead(502);
                    res.destroy(error);
                },
            },
        );
    });
});
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: (server.address() as { port: number }).port })));
