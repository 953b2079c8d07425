// The internet, as far as the end-to-end tests go: one HTTPS server on the uplink network that answers as
// api.anthropic.com, api.openai.com, generativelanguage.googleapis.com and allowed.example (network aliases), and
// logs what it receives. It speaks enough of each provider for the real OpenClaw: Anthropic Messages (JSON and
// SSE), OpenAI Chat Completions (JSON and SSE, with the usage chunk when asked), OpenAI embeddings and Gemini
// generateContent (JSON, and SSE with alt=sse).
import https from "node:https";

/** What every chat or messages request is answered with: the test says, so it can check it came back. */
const ANSWER = process.env.STANDIN_ANSWER;

function sse(res, events) {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    for (const [event, data] of events) res.write(`${event ? `event: ${event}\n` : ""}data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
    res.end();
}

function messages(res, request) {
    const usage = { input_tokens: 12, output_tokens: 7 };
    if (!request.stream) {
        return json(res, { id: "msg_standin", type: "message", role: "assistant", model: request.model, content: [{ type: "text", text: ANSWER }], stop_reason: "end_turn", usage });
    }
    sse(res, [
        ["message_start", { type: "message_start", message: { id: "msg_standin", type: "message", role: "assistant", model: request.model, content: [], stop_reason: null, usage: { input_tokens: usage.input_tokens, output_tokens: 1 } } }],
        ["content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }],
        ["content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: ANSWER } }],
        ["content_block_stop", { type: "content_block_stop", index: 0 }],
        ["message_delta", { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: usage.output_tokens } }],
        ["message_stop", { type: "message_stop" }],
    ]);
}

function chatCompletions(res, request) {
    const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
    const base = { id: "chatcmpl-standin", object: "chat.completion.chunk", created: 1, model: request.model };
    if (!request.stream) {
        return json(res, { id: "chatcmpl-standin", object: "chat.completion", created: 1, model: request.model, choices: [{ index: 0, message: { role: "assistant", content: ANSWER }, finish_reason: "stop" }], usage });
    }
    const events = [
        [null, { ...base, choices: [{ index: 0, delta: { role: "assistant", content: ANSWER }, finish_reason: null }] }],
        [null, { ...base, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }],
    ];
    if (request.stream_options?.include_usage) events.push([null, { ...base, choices: [], usage }]);
    events.push([null, "[DONE]"]);
    sse(res, events);
}

function embeddings(res, request) {
    const inputs = Array.isArray(request.input) ? request.input : [request.input];
    const dimensions = request.dimensions ?? 8;
    const vector = Array.from({ length: dimensions }, (_, i) => (i + 1) / dimensions);
    const embedding = request.encoding_format === "base64" ? Buffer.from(new Float32Array(vector).buffer).toString("base64") : vector;
    json(res, { object: "list", model: request.model, data: inputs.map((_, index) => ({ object: "embedding", index, embedding })), usage: { prompt_tokens: 5 * inputs.length, total_tokens: 5 * inputs.length } });
}

function geminiGenerate(res, model, stream) {
    const usageMetadata = { promptTokenCount: 10, candidatesTokenCount: 5, thoughtsTokenCount: 2, totalTokenCount: 17 };
    const answer = { candidates: [{ content: { role: "model", parts: [{ text: ANSWER }] }, finishReason: "STOP", index: 0 }], usageMetadata, modelVersion: model, responseId: "gemini-standin" };
    if (!stream) return json(res, answer);
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write(`data: ${JSON.stringify({ candidates: [{ content: { role: "model", parts: [{ text: "" }] }, index: 0 }], usageMetadata: { promptTokenCount: 10, totalTokenCount: 10 }, modelVersion: model })}\r\n\r\n`);
    res.end(`data: ${JSON.stringify(answer)}\r\n\r\n`);
}

/** The text of every user message of a Messages or Chat Completions request (what the agent was asked), if any. */
function userText(request) {
    const users = (Array.isArray(request.messages) ? request.messages : []).filter((m) => m && m.role === "user");
    if (users.length === 0) return null;
    const text = (content) => (typeof content === "string" ? content : Array.isArray(content) ? content.map((part) => (typeof part?.text === "string" ? part.text : "")).join("") : "");
    return users.map((m) => text(m.content)).join("\n");
}

function json(res, value) {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(value));
}

const server = https.createServer({ cert: process.env.STANDIN_CERT, key: process.env.STANDIN_KEY }, (req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
        let request = {};
        try { request = JSON.parse(Buffer.concat(chunks).toString() || "{}"); } catch { /* not JSON */ }
        console.log(JSON.stringify({ host: req.headers.host, method: req.method, path: req.url, xApiKey: req.headers["x-api-key"] ?? null, xGoogApiKey: req.headers["x-goog-api-key"] ?? null, authorization: req.headers.authorization ?? null, userText: userText(request) }));
        if (req.method === "POST" && req.url === "/v1/messages") return messages(res, request);
        if (req.method === "POST" && req.url === "/v1/chat/completions") return chatCompletions(res, request);
        if (req.method === "POST" && req.url === "/v1/embeddings") return embeddings(res, request);
        const gemini = /^\/v1(?:beta)?\/models\/([^/:?]+):(generateContent|streamGenerateContent)(\?alt=sse)?$/.exec(req.url);
        if (req.method === "POST" && gemini) return geminiGenerate(res, gemini[1], gemini[2] === "streamGenerateContent");
        json(res, { hello: req.headers.host });
    });
});
server.listen(443, "0.0.0.0", () => console.log(JSON.stringify({ event: "listening" })));
