// The Ingress benchmark's stand-in for an agent's OpenClaw gateway (and, behind KeyProxy, for an OpenAI-compatible
// provider): plain HTTP on loopback, its own process, answering POST /v1/chat/completions at once. A request with
// "stream": true gets an SSE stream of a few chunks (with the usage chunk when stream_options.include_usage asks).
//   node bench/chatGateway.mts   (prints {"port":N} when listening)
import http from "node:http";

const MODEL = "gpt-4o-mini";
const usage = { prompt_tokens: 400, completion_tokens: 8, total_tokens: 408 };
const ANSWER = JSON.stringify({
    id: "chatcmpl-bench",
    object: "chat.completion",
    created: 0,
    model: MODEL,
    choices: [{ index: 0, message: { role: "assistant", content: "Here is the summary you asked for." }, finish_reason: "stop" }],
    usage,
});
const chunk = (delta: object, extra: object = {}) =>
    `data: ${JSON.stringify({ id: "chatcmpl-bench", object: "chat.completion.chunk", created: 0, model: MODEL, choices: [{ index: 0, delta, finish_reason: null }], ...extra })}\n\n`;
const WORDS = ["Here ", "is ", "the ", "summary ", "you ", "asked ", "for", "."];

const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (part: Buffer) => parts.push(part));
    req.on("end", () => {
        if (req.method !== "POST" || !req.url?.endsWith("/v1/chat/completions")) return void res.writeHead(404).end();
        const body = JSON.parse(Buffer.concat(parts).toString("utf8")) as { stream?: boolean; stream_options?: { include_usage?: boolean } };
        if (!body.stream) {
            res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(ANSWER) });
            return void res.end(ANSWER);
        }
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        res.write(chunk({ role: "assistant", content: "" }));
        let sent = 0;
        const next = () => {
            if (res.destroyed) return;
            if (sent < WORDS.length) {
                res.write(chunk({ content: WORDS[sent++] }));
                return void setImmediate(next);
            }
            if (body.stream_options?.include_usage) res.write(`data: ${JSON.stringify({ id: "chatcmpl-bench", object: "chat.completion.chunk", created: 0, model: MODEL, choices: [], usage })}\n\n`);
            res.end("data: [DONE]\n\n");
        };
        setImmediate(next);
    });
});
server.keepAliveTimeout = 65_000;
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: (server.address() as { port: number }).port })));
