// The floor of a proxy on Node: node:http in front, undici's dispatch API behind, the key attached, the body passed
// through, nothing else (no route checks, credential, metering, budget, ledger, log line or metrics). What KeyProxy
// costs above this is its own work; what this costs is what any Node proxy pays before doing any of it.
//   node bench/floor.mts <upstream origin> <caFile> <key>   (prints {"port":N} when listening)
import { readFileSync } from "node:fs";
import http from "node:http";
import { Pool } from "undici";

const [origin, caFile, key] = process.argv.slice(2);
const pool = new Pool(origin, { connections: 2048, connect: { ca: readFileSync(caFile, "utf8"), servername: "localhost" } });

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
        const headers: Record<string, string> = { "content-type": "application/json", "x-api-key": key, host: "localhost" };
        const body = Buffer.concat(chunks);
        if (body.length > 0) headers["content-length"] = String(body.length);
        pool.dispatch(
            { method: req.method as "POST", path: req.url!.replace(/^\/anthropic/, ""), headers, body },
            {
                onRequestStart() {},
                onResponseStart(_controller, status, responseHeaders) {
                    const out: Record<string, string> = {};
                    for (const name of ["content-type", "content-length"]) if (typeof responseHeaders[name] === "string") out[name] = responseHeaders[name];
                    res.writeHead(status, out);
                },
                onResponseData(controller, chunk) {
                    if (!res.write(chunk)) {
                        controller.pause();
                        res.once("drain", () => controller.resume());
                    }
                },
                onResponseEnd() {
                    res.end();
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
