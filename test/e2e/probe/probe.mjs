// Checks run from inside a real agent's container, as the agent's user, for what the agent itself would not try:
// `docker exec -i <agent> node --input-type=module -e "$(cat probe.mjs)" <check> [args]`, one JSON line out.
// As its own image (`serve`), it is the control container on the uplink.
import { createHash } from "node:crypto";
import { lookup } from "node:dns/promises";
import { chmodSync, readFileSync, readdirSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";

// Run as a file, argv[1] is the script; run with -e, the arguments start there.
const [check = "serve", ...args] = process.argv.slice(import.meta.filename.endsWith("probe.mjs") ? 2 : 1);
const print = (value) => console.log(JSON.stringify(value));

function tcp(host, port, timeoutMs) {
    return new Promise((resolve) => {
        const socket = net.connect({ host, port: Number(port), timeout: Number(timeoutMs) });
        socket.once("connect", () => { socket.destroy(); resolve({ connected: true }); });
        socket.once("timeout", () => { socket.destroy(); resolve({ connected: false, error: "timeout" }); });
        socket.once("error", (error) => resolve({ connected: false, error: error.code }));
    });
}

/** Every readable file under `dir` (not /proc, /sys, /dev), with its content. */
function* files(dir) {
    let entries = [];
    try { entries = readdirSync(dir); } catch { return; }
    for (const entry of entries) {
        const path = `${dir === "/" ? "" : dir}/${entry}`;
        if (["/proc", "/sys", "/dev"].includes(path)) continue;
        let stat;
        try { stat = statSync(path); } catch { continue; }
        if (stat.isDirectory()) yield* files(path);
        else if (stat.isFile() && stat.size < 5_000_000) {
            try { yield [path, readFileSync(path)]; } catch { /* unreadable */ }
        }
    }
}

switch (check) {
    case "serve":
        http.createServer((_req, res) => res.end("probe dashboard\n")).listen(18789, "0.0.0.0");
        break;
    case "config": {
        // What the agent's OpenClaw is told about its providers, and what its environment says.
        const config = JSON.parse(readFileSync(process.env.OPENCLAW_CONFIG_PATH, "utf8"));
        const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => /API_KEY|BASE_URL|PROXY/.test(name)));
        print({ providers: config.models.providers, env });
        break;
    }
    case "write": {
        // Tries to change or replace a file; reports the error code of each attempt.
        const [path] = args;
        const attempt = (action) => { try { action(); return "ok"; } catch (error) { return error.code; } };
        print({ write: attempt(() => writeFileSync(path, "{}")), rename: attempt(() => renameSync(path, `${path}.moved`)), remove: attempt(() => unlinkSync(path)), chmod: attempt(() => chmodSync(path, 0o666)) });
        break;
    }
    case "http": {
        const [url, method = "GET", body = ""] = args;
        const headers = Object.fromEntries(args.slice(3).map((h) => [h.slice(0, h.indexOf("=")), h.slice(h.indexOf("=") + 1)]));
        try {
            const res = await fetch(url, { method, headers, body: method === "GET" ? undefined : body, signal: AbortSignal.timeout(10_000) });
            print({ status: res.status, body: (await res.text()).slice(0, 2000) });
        } catch (error) {
            print({ error: String(error.cause?.code ?? error.name) });
        }
        break;
    }
    case "tcp":
        print(await tcp(args[0], args[1], args[2] ?? 2000));
        break;
    case "resolve":
        try { print({ addresses: (await lookup(args[0], { all: true })).map((a) => a.address) }); } catch (error) { print({ error: error.code }); }
        break;
    case "connect": {
        // CONNECT through the HTTP proxy in HTTPS_PROXY; resolves with the proxy's status line.
        const proxy = new URL(process.env.HTTPS_PROXY);
        const socket = net.connect(Number(proxy.port), proxy.hostname, () => socket.write(`CONNECT ${args[0]} HTTP/1.1\r\nHost: ${args[0]}\r\n\r\n`));
        socket.setTimeout(10_000, () => { print({ error: "timeout" }); socket.destroy(); });
        socket.once("data", (chunk) => { print({ status: chunk.toString().split("\r\n")[0] }); socket.destroy(); });
        socket.once("error", (error) => print({ error: error.code }));
        break;
    }
    case "scan": {
        // Needles arrive as sha256 digests on stdin, so no secret is ever in this process's argv or env.
        const digests = new Set(readFileSync(0, "utf8").split("\n").filter(Boolean));
        const found = [];
        const look = (where, text) => {
            for (const token of text.split(/[^A-Za-z0-9_-]+/)) if (token.length >= 20 && digests.has(createHash("sha256").update(token).digest("hex"))) found.push(where);
        };
        look("env", Object.values(process.env).join(" "));
        for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
            for (const part of ["environ", "cmdline"]) {
                try { look(`/proc/${pid}/${part}`, readFileSync(`/proc/${pid}/${part}`, "latin1")); } catch { /* gone or not ours */ }
            }
        }
        let scanned = 0;
        for (const [path, content] of files("/")) {
            scanned++;
            look(path, content.toString("latin1"));
        }
        print({ found, scanned });
        break;
    }
    default:
        print({ error: `unknown check ${check}` });
}
