// The internet, as far as the end-to-end tests go: one HTTPS server on the uplink network that answers as
// api.anthropic.com, api.openai.com and allowed.example (network aliases), and logs what it receives.
import https from "node:https";

const server = https.createServer({ cert: process.env.STANDIN_CERT, key: process.env.STANDIN_KEY }, (req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
        console.log(JSON.stringify({ host: req.headers.host, method: req.method, path: req.url, xApiKey: req.headers["x-api-key"] ?? null, authorization: req.headers.authorization ?? null }));
        const body = Buffer.concat(chunks).toString();
        let model = "unknown";
        try { model = JSON.parse(body).model ?? model; } catch { /* not JSON */ }
        res.setHeader("content-type", "application/json");
        if (req.url === "/v1/messages") return res.end(JSON.stringify({ id: "m", type: "message", model, content: [{ type: "text", text: "hi" }], usage: { input_tokens: 10, output_tokens: 5 } }));
        if (req.url === "/v1/chat/completions") return res.end(JSON.stringify({ id: "c", object: "chat.completion", model, choices: [], usage: { prompt_tokens: 10, completion_tokens: 5 } }));
        res.end(JSON.stringify({ hello: req.headers.host }));
    });
});
server.listen(443, "0.0.0.0", () => console.log(JSON.stringify({ event: "listening" })));
