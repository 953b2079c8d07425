// The benchmark's mock upstream: an HTTPS server in its own process. JSON answers for latency runs, and
// Anthropic-style SSE streams whose events carry the time they were written, for chunk-delay runs. Like the real
// providers' APIs it speaks HTTP/2 and HTTP/1.1 over TLS (ALPN picks); `--http1` makes it HTTP/1.1 only.
//   node bench/upstream.mts <certFile> <keyFile> [--http1]   (prints {"port":N,"plainPort":M} when listening)
// The same answers are also served over plain HTTP on plainPort: the fixed-rate generator's "direct" baseline, so the
// baseline does not carry TLS work at the client that the proxies' clients (plain HTTP) never do.
import { readFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import net from "node:net";

const [certFile, keyFile, mode] = process.argv.slice(2);
const JSON_BODY = JSON.stringify({ id: "msg_1", type: "message", model: "claude-sonnet-4-5", content: [{ type: "text", text: "ok" }], usage: { input_tokens: 10, output_tokens: 5 } });
const event = (name: string, data: object) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;

/** What the answers use of a response, HTTP/1.1's or HTTP/2's (whose `destroyed` is its stream's). */
interface Response {
    writeHead(status: number, headers: Record<string, string | number>): unknown;
    write(chunk: string): boolean;
    end(chunk?: string): unknown;
    once(event: "drain", listener: () => void): unknown;
}
const gone = (res: http.ServerResponse | http2.Http2ServerResponse) => ("stream" in res ? res.stream.destroyed : res.destroyed);

const answer = (req: http.IncomingMessage | http2.Http2ServerRequest, raw: http.ServerResponse | http2.Http2ServerResponse) => {
    const res = raw as Response;
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
            if (gone(raw)) return;
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
const tls = { cert: readFileSync(certFile), key: readFileSync(keyFile) };
// node:http sets TCP_NODELAY on its sockets; node:http2's server leaves Nagle on unless asked, which delays a
// response's DATA frame behind its HEADERS frame until the peer's ACK.
const server = mode === "--http1" ? https.createServer({ ...tls, keepAliveTimeout: 65_000 }, answer) : http2.createSecureServer({ ...tls, allowHTTP1: true, noDelay: true }, answer);
const plain = http.createServer({ keepAliveTimeout: 65_000 }, answer);
const listening = (s: net.Server) => new Promise<number>((resolve) => s.listen(0, "127.0.0.1", () => resolve((s.address() as net.AddressInfo).port)));
const [port, plainPort] = await Promise.all([listening(server), listening(plain)]);
console.log(JSON.stringify({ port, plainPort }));
