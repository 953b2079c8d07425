import http from "node:http";
import { expect } from "vitest";
import path from "node:path";
import { type RuntimeConfig, runtimeConfigSchema } from "../../proxy-image/src/config";
import { jsonLogger } from "../../runtime/log";
import { type AgentEntry, credentialDigest } from "../../proxy-image/src/policy";
import { KeyProxyServer } from "../../proxy-image/src/server";
import type { MockUpstream } from "./mockUpstream";
import { tempDir } from "./tempDirs";
import { testPki } from "./tls";
import { fakeKey } from "./fakeKeys";

export const REAL_KEYS = {
    anthropic: fakeKey("anthropic", `${"REAL".repeat(10)}-AAAA`),
    openai: fakeKey("openai", `${"REAL".repeat(10)}-BBBB`),
    gemini: fakeKey("gemini", `${"REAL".repeat(8)}-CC`),
};
export const TOKENS = { bart: "ocp_bartbartbartbartbartbartbartbartbartbartbartbart", lisa: "ocp_lisalisalisalisalisalisalisalisalisalisalisalisa" };

/** bart's network is loopback, so the tests' requests come from it; lisa's is elsewhere. */
export const AGENTS: AgentEntry[] = [
    { name: "bart", credentialSha256: credentialDigest(TOKENS.bart), subnet: "127.0.0.0/8" },
    { name: "lisa", credentialSha256: credentialDigest(TOKENS.lisa), subnet: "10.64.0.0/28" },
];

export interface RunningProxy {
    server: KeyProxyServer;
    port: number;
    adminPort: number;
    /** Every admin listener's port, in config order. */
    adminPorts: number[];
    logs: string[];
    config: RuntimeConfig;
}

export async function startKeyProxy(
    upstream: Pick<MockUpstream, "baseUrl">,
    overrides: Record<string, unknown> = {},
    trustTestCa = true,
    now?: () => Date,
    keys: Record<string, string> = REAL_KEYS,
    /** Milliseconds, for the audit budget. */
    clockMs?: () => number,
): Promise<RunningProxy> {
    const logs: string[] = [];
    const config = runtimeConfigSchema.parse({
        listen: { host: "127.0.0.1", port: 0 },
        admin: [{ host: "127.0.0.1", port: 0 }],
        upstreams: { anthropic: { baseUrl: upstream.baseUrl }, openai: { baseUrl: upstream.baseUrl }, gemini: { baseUrl: upstream.baseUrl } },
        registryDir: tempDir("keyproxy-registry"),
        auditDir: tempDir("keyproxy-audit"),
        metering: { ledgerFile: path.join(tempDir("keyproxy-ledger"), "ledger.log") },
        ...overrides,
    });
    const server = new KeyProxyServer({ config, keys: { ...keys }, extraCa: trustTestCa ? testPki().ca : undefined }, jsonLogger("key-proxy", (l) => logs.push(l)), now, clockMs);
    server.setAgents(AGENTS);
    const { port, adminPorts } = await server.listen();
    return { server, port, adminPort: adminPorts[0], adminPorts, logs, config };
}

/**
 * Closes the proxies and the upstream, then checks that no secret reached anything observed (answers, and each
 * proxy's log lines and metrics): invariant 6. Returns all of it for further checks.
 */
export async function closeAndCheckNoSecretLeaked(proxies: RunningProxy[], upstream: MockUpstream, observed: string[], secrets: string[]): Promise<string> {
    for (const p of proxies) {
        observed.push(...p.logs, await p.server.metrics.registry.metrics());
        await p.server.close();
    }
    await upstream.stop();
    const everything = observed.join("\n");
    for (const secret of secrets) expect(everything).not.toContain(secret);
    return everything;
}

export interface ClientResponse {
    status: number;
    headers: http.IncomingHttpHeaders;
    body: string;
}

export interface ClientRequest {
    method?: string;
    path: string;
    headers?: Record<string, string>;
    body?: string;
}

/** One request on its own connection. Rejects with the socket error when the proxy closes without answering. */
export function send(port: number, { method = "POST", path: target, headers = {}, body }: ClientRequest): Promise<ClientResponse> {
    return new Promise((resolve, reject) => {
        const req = http.request({ host: "127.0.0.1", port, method, path: target, headers, agent: false }, (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c) => chunks.push(c));
            res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
            res.on("error", reject);
        });
        req.on("error", reject);
        req.end(body);
    });
}

/** Request bodies the proxy can meter: a model and an output cap. */
export const ANTHROPIC_BODY = JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 64, messages: [{ role: "user", content: "hi" }] });
export const OPENAI_BODY = JSON.stringify({ model: "gpt-5.1", max_completion_tokens: 64, messages: [{ role: "user", content: "hi" }] });

export const anthropicHeaders = (token = TOKENS.bart) => ({ "x-api-key": token, "content-type": "application/json", "anthropic-version": "2023-06-01" });
export const openaiHeaders = (token = TOKENS.bart) => ({ authorization: `Bearer ${token}`, "content-type": "application/json" });
export const geminiHeaders = (token = TOKENS.bart) => ({ "x-goog-api-key": token, "content-type": "application/json" });
export const GEMINI_BODY = JSON.stringify({ contents: [{ role: "user", parts: [{ text: "hi" }] }], generationConfig: { maxOutputTokens: 64 } });
