// The benchmark's mock upstream: an HTTPS server in its own process. JSON answers for latency runs, and
// Anthropic-style SSE streams whose events carry the time they were written, for chunk-delay runs.
//   node bench/upstream.mts <certFile> <keyFile>   (prints {"port":N,"plainPort":M} when listening)
// The same answers are also served over plain HTTP on plainPort: the fixed-rate generator's "direct" baseline, so the
// baseline does not carry TLS work at the client that the proxies' clients (plain HTTP) never do.
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";

const [certFile, keyFile] = process.argv.slice(2);
const JSON_BODY = JSON.stringify({ id: "msg_1", type: "message", model: "claude-sonnet-4-5", content: [{ type: "text", text: "ok" }], usage: { input_tokens: 10, output_tokens: 5 } });
const event = (name: string, data: object) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;

const answer = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? "/", "https://upstream");
    req.resume();
    req.on("end", () => {
        const chunks = Number(url.searchParams.get("chunks") ?? 0);
        if (chunks === 0) {
            res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(JSON_BODY) });
            return void res.end(JSON_BODY);
        }
        const interval = Number(url.searchParams.get("interval") ?? 0);
        const pad = "x".repeat(Number(url.searchParams.get("size") ?? 0));
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        res.write(event("message_start", { type: "message_start", message: { model: "claude-sonnet-4-5", usage: { input_tokens: 10, output_tokens: 1 } } }));
        let sent = 0;
        const next = () => {
            if (res.destroyed) return;
            if (sent === chunks) {
                res.write(event("message_delta", { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: chunks } }));
                return void res.end(event("message_stop", { type: "message_stop" }));
            }
            const ok = res.write(event("content_block_delta", { type: "content_block_delta", index: sent++, t: performance.timeOrigin + performance.now(), delta: { type: "text_delta", text: pad } }));
            if (interval > 0) setTimeout(next, interval);
            else if (ok) setImmediate(next);
            else res.once("drain", next);
        };
        next();
    });
};
const server = https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, answer);
const plain = http.createServer(answer);
for (const s of [server, plain]) s.keepAliveTimeout = 65_000;
const listening = (s: http.Server) => new Promise<number>((resolve) => s.listen(0, "127.0.0.1", () => resolve((s.address() as { port: number }).port)));
const [port, plainPort] = await Promise.all([listening(server), listening(plain)]);
console.log(JSON.stringify({ port, plainPort }));
