// A mock HTTPS upstream that behaves like the Anthropic Messages, OpenAI Chat Completions and Gemini
// generateContent APIs, records what it receives, and lets a test take over any request.
import { once } from "node:events";
import https from "node:https";
import http2 from "node:http2";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { testPki } from "./tls";

export interface ReceivedRequest {
    method: string;
    path: string;
    headers: IncomingHttpHeaders;
    body: string;
    servername: string | undefined;
    /** "1.1", or "2.0" when the request came over HTTP/2. */
    httpVersion: string;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void | Promise<void>;

export function sse(event: string, data: unknown): string {
    return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

export const anthropicStream = (model = "claude-sonnet-4-5") => [
    sse("message_start", { type: "message_start", message: { id: "msg_1", model, usage: { input_tokens: 12, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 } } }),
    sse("content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }),
    sse("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hello" } }),
    sse("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: " world" } }),
    sse("content_block_stop", { type: "content_block_stop", index: 0 }),
    sse("message_delta", { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 5 } }),
    sse("message_stop", { type: "message_stop" }),
];

/** OpenAI's chat stream: with include_usage every chunk carries "usage": null and a last chunk with no choices carries it. */
export const openaiStream = (model = "gpt-5.1", includeUsage = false, usage = { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 }) => {
    const extra = includeUsage ? { usage: null } : {};
    return [
        `data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model, choices: [{ index: 0, delta: { role: "assistant", content: "" } }], ...extra })}\n\n`,
        `data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model, choices: [{ index: 0, delta: { content: "Hello" } }], ...extra })}\n\n`,
        `data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model, choices: [{ index: 0, delta: {}, finish_reason: "stop" }], ...extra })}\n\n`,
        ...(includeUsage ? [`data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model, choices: [], usage })}\n\n`] : []),
        "data: [DONE]\n\n",
    ];
};

export const responsesStream = (model = "gpt-5.1", terminal = "response.completed", usage = { input_tokens: 20, input_tokens_details: { cached_tokens: 4 }, output_tokens: 7 }) => [
    sse("response.created", { type: "response.created", response: { id: "r1", model, status: "in_progress", usage: null } }),
    sse("response.output_text.delta", { type: "response.output_text.delta", delta: "Hello" }),
    sse(terminal, { type: terminal, response: { id: "r1", model, status: terminal.slice("response.".length), usage } }),
];

/** Gemini's usage: the prompt count includes the cached tokens; thinking tokens are counted apart from the answer's. */
export const GEMINI_USAGE = { promptTokenCount: 11, cachedContentTokenCount: 3, candidatesTokenCount: 4, thoughtsTokenCount: 6, totalTokenCount: 21 };

/** Gemini's streamGenerateContent with alt=sse: data-only events separated by CRLF CRLF, usage cumulative in each. */
export const geminiStream = (model = "gemini-2.5-flash", usage: Record<string, number> = GEMINI_USAGE) => [
    `data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text: "Hello" }], role: "model" }, index: 0 }], usageMetadata: { promptTokenCount: usage.promptTokenCount, totalTokenCount: usage.promptTokenCount }, modelVersion: model, responseId: "g1" })}\r\n\r\n`,
    `data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text: " world" }], role: "model" }, finishReason: "STOP", index: 0 }], usageMetadata: usage, modelVersion: model, responseId: "g1" })}\r\n\r\n`,
];

/** Gemini's generateContent answer. */
export const geminiResponse = (model = "gemini-2.5-flash", usage: Record<string, number> = GEMINI_USAGE) => ({
    candidates: [{ content: { parts: [{ text: "Hello world" }], role: "model" }, finishReason: "STOP", index: 0 }],
    usageMetadata: usage,
    modelVersion: model,
    responseId: "g1",
});

const GEMINI_GENERATE = /^\/v1(?:beta)?\/models\/([^/:?]+):(generateContent|streamGenerateContent)(\?.*)?$/;

/** Tokens the mock upstream counts per embeddings input. */
export const EMBEDDING_TOKENS_PER_INPUT = 8;

/** OpenAI's embeddings answer: one vector per input (floats, or base64 of little-endian float32 when asked), prompt and total tokens. */
export function embeddingsResponse(json: { model: string; input: unknown; encoding_format?: string }) {
    const inputs = Array.isArray(json.input) ? json.input : [json.input];
    const vector = [0.25, -0.5, 0.125];
    const embedding = json.encoding_format === "base64" ? Buffer.from(new Float32Array(vector).buffer).toString("base64") : vector;
    const tokens = inputs.length * EMBEDDING_TOKENS_PER_INPUT;
    return { object: "list", data: inputs.map((_, index) => ({ object: "embedding", index, embedding })), model: json.model, usage: { prompt_tokens: tokens, total_tokens: tokens } };
}

function defaultHandler(req: IncomingMessage, res: ServerResponse, body: string) {
    const json = body ? JSON.parse(body) : {};
    if (req.url === "/v1/messages" && req.method === "POST") {
        if (json.stream) {
            res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
            for (const event of anthropicStream(json.model)) res.write(event);
            return void res.end();
        }
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(JSON.stringify({ id: "msg_1", type: "message", model: json.model, content: [{ type: "text", text: "Hello" }], usage: { input_tokens: 12, output_tokens: 5 } }));
    }
    if (req.url === "/v1/chat/completions" && req.method === "POST") {
        if (json.stream) {
            res.writeHead(200, { "content-type": "text/event-stream" });
            for (const event of openaiStream(json.model, json.stream_options?.include_usage === true)) res.write(event);
            return void res.end();
        }
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(JSON.stringify({ id: "c1", object: "chat.completion", model: json.model, choices: [{ index: 0, message: { role: "assistant", content: "Hello" } }], usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 } }));
    }
    if (req.url === "/v1/responses" && req.method === "POST") {
        if (json.stream) {
            res.writeHead(200, { "content-type": "text/event-stream" });
            for (const event of responsesStream(json.model)) res.write(event);
            return void res.end();
        }
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(JSON.stringify({ id: "r1", object: "response", model: json.model, output: [], usage: { input_tokens: 20, input_tokens_details: { cached_tokens: 4 }, output_tokens: 7 } }));
    }
    if (req.url === "/v1/embeddings" && req.method === "POST") {
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(JSON.stringify(embeddingsResponse(json)));
    }
    const gemini = GEMINI_GENERATE.exec(req.url ?? "");
    if (gemini && req.method === "POST") {
        if (gemini[2] === "streamGenerateContent") {
            res.writeHead(200, { "content-type": "text/event-stream" });
            for (const event of geminiStream(gemini[1])) res.write(event);
            return void res.end();
        }
        res.writeHead(200, { "content-type": "application/json" });
        return void res.end(JSON.stringify(geminiResponse(gemini[1])));
    }
    if (req.url?.split("?")[0] === "/v1/models" && req.method === "GET") {
        res.writeHead(200, { "content-type": "application/json", "set-cookie": "tracking=1" });
        return void res.end(JSON.stringify({ data: [{ id: "m" }] }));
    }
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { message: `no route ${req.method} ${req.url}` } }));
}

export class MockUpstream {
    readonly received: ReceivedRequest[] = [];
    /** Replaces the default API behaviour for the next requests until reset. */
    handler: Handler | undefined;
    /** TLS connections accepted so far: keep-alive reuse shows as requests outnumbering these. */
    tlsConnections = 0;
    private readonly server: https.Server | http2.Http2SecureServer;
    private readonly sockets = new Set<Socket>();
    port = 0;

    /**
     * `http2`: speaks HTTP/2 and HTTP/1.1, ALPN choosing, as the providers' APIs do; handlers then get node:http2's
     * compatibility request and response, which answer to the same calls. Otherwise HTTP/1.1 only.
     */
    constructor({ http2: speaksHttp2 = false } = {}) {
        const { cert, key } = testPki();
        const serve = (req: IncomingMessage, res: ServerResponse) => void this.serve(req, res);
        this.server = speaksHttp2
            ? http2.createSecureServer({ cert, key, allowHTTP1: true }, serve as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void)
            : https.createServer({ cert, key }, serve);
        this.server.on("secureConnection", (socket: Socket) => {
            this.tlsConnections++;
            this.sockets.add(socket);
            socket.once("close", () => this.sockets.delete(socket));
        });
    }

    get baseUrl() {
        return `https://localhost:${this.port}`;
    }

    async start(): Promise<this> {
        this.server.listen(0, "127.0.0.1");
        await once(this.server, "listening");
        this.port = (this.server.address() as AddressInfo).port;
        return this;
    }

    async stop() {
        for (const socket of this.sockets) socket.destroy();
        await new Promise((r) => this.server.close(r));
    }

    private async serve(req: IncomingMessage, res: ServerResponse) {
        const chunks: Buffer[] = [];
        for await (const chunk of req) chunks.push(chunk as Buffer);
        const body = Buffer.concat(chunks).toString("utf8");
        this.received.push({ method: req.method!, path: req.url!, headers: req.headers, body, servername: (req.socket as { servername?: string }).servername, httpVersion: req.httpVersion });
        await (this.handler ?? defaultHandler)(req, res, body);
    }
}
