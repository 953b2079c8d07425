import { describe, expect, it } from "vitest";
import {
    type AgentEntry,
    authenticate,
    clientResponseHeaders,
    credentialDigest,
    decideRoute,
    presentedCredential,
    providerError,
    scrubSecrets,
    upstreamRequestHeaders,
} from "../proxy-image/src/policy";
import { BUILT_IN, KEY_HEADERS, builtInProvider } from "../providers/index";
import { fakeKey } from "./support/fakeKeys";
import type { Arrival } from "../runtime/registry";

const spec = (id: string) => builtInProvider(id)!;

describe("decideRoute forwards", () => {
    it.each([
        ["POST", "/anthropic/v1/messages", "anthropic", "/v1/messages"],
        ["POST", "/openai/v1/chat/completions", "openai", "/v1/chat/completions"],
        ["GET", "/openai/v1/models?limit=5", "openai", "/v1/models?limit=5"],
        ["DELETE", "/openai/v1/files/file-abc", "openai", "/v1/files/file-abc"],
        ["POST", "/openai/v1/responses", "openai", "/v1/responses"],
        ["GET", "/anthropic/v1/models/claude%20x", "anthropic", "/v1/models/claude%20x"],
    ])("%s %s to %s %s", (method, target, provider, upstreamPath) => {
        expect(decideRoute(method, target)).toMatchObject({ action: "forward", provider, upstreamPath });
    });
});

describe("decideRoute drops", () => {
    it.each([
        ["PUT", "/anthropic/v1/messages", "method"],
        ["PATCH", "/anthropic/v1/messages", "method"],
        ["TRACE", "/anthropic/v1/messages", "method"],
        ["CONNECT", "api.anthropic.com:443", "method"],
        ["OPTIONS", "/anthropic/v1/messages", "method"],
        ["HEAD", "/anthropic/v1/messages", "method"],
        ["post", "/anthropic/v1/messages", "method"],
        ["POST", "http://evil.example/anthropic/v1/messages", "target_form"],
        ["POST", "https://api.anthropic.com/v1/messages", "target_form"],
        ["POST", "*", "target_form"],
        ["POST", "/", "unknown_route"],
        ["POST", "/anthropic", "unknown_route"],
        ["POST", "/anthropic/", "unknown_route"],
        ["POST", "/google/v1/models", "unknown_route"],
        ["POST", "/Anthropic/v1/messages", "unknown_route"],
        ["POST", "/anthropicx/v1/messages", "unknown_route"],
        ["GET", "/metrics", "unknown_route"],
        ["POST", "/anthropic/../openai/v1/chat/completions", "path_traversal"],
        ["POST", "/anthropic/v1/../../openai/x", "path_traversal"],
        ["POST", "/anthropic/./v1/messages", "path_traversal"],
        ["POST", "/anthropic//v1/messages", "path_traversal"],
        ["POST", "/anthropic/%2e%2e/openai/v1", "path_encoding"],
        ["POST", "/anthropic/%2E%2E/openai/v1", "path_encoding"],
        ["POST", "/anthropic/v1%2fmessages", "path_encoding"],
        ["POST", "/anthropic/v1%2Fmessages", "path_encoding"],
        ["POST", "/anthropic/v1%5cmessages", "path_encoding"],
        ["POST", "/anthropic/v1/messages%00", "path_encoding"],
        ["POST", "/anthropic/v1/%252e%252e/x", "path_encoding"],
        ["POST", "/anthropic/v1/%zz", "path_encoding"],
        ["POST", "/anthropic/v1\\messages", "path_chars"],
        ["POST", "/anthropic/v1/messages\u0000", "path_chars"],
        ["POST", "/anthropic/v1/mes sages", "path_chars"],
        ["POST", "/anthropic/v1/messages#frag", "path_chars"],
        ["POST", "/anthropic/v1/%e2%80%ae", "forward"],
    ])("%s %s (%s)", (method, target, reason) => {
        const decision = decideRoute(method, target);
        if (reason === "forward") expect(decision.action).toBe("forward");
        else expect(decision).toEqual({ action: "drop", reason });
    });
});

describe("upstreamRequestHeaders", () => {
    it.each(BUILT_IN.map((p) => [p.id]))("%s: no header any provider carries a key in reaches upstream but the real key", (id) => {
        const provider = spec(id);
        const incoming = Object.fromEntries([...KEY_HEADERS, "api-key"].map((h) => [h, "Bearer ocp_agent"]));
        const out = upstreamRequestHeaders(incoming, provider, "REAL");
        expect(JSON.stringify(out)).not.toContain("ocp_agent");
        expect(out[provider.attach.header]).toBe(provider.attach.bearer ? "Bearer REAL" : "REAL");
    });

    const incoming = {
        host: "key-proxy:8080",
        "x-api-key": "ocp_agent_token",
        authorization: "Bearer ocp_agent_token",
        "api-key": "x",
        cookie: "a=b",
        connection: "keep-alive, x-secret-hop",
        "x-secret-hop": "1",
        "keep-alive": "timeout=5",
        "transfer-encoding": "chunked",
        te: "trailers",
        upgrade: "h2c",
        "proxy-authorization": "Basic x",
        "x-forwarded-for": "10.64.0.4",
        "x-forwarded-host": "internal",
        forwarded: "for=10.64.0.4",
        via: "1.1 agent",
        "x-real-ip": "10.64.0.4",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
        "content-type": "application/json",
        "content-length": "12",
        "accept-encoding": "gzip, br",
    };

    it("for Anthropic: strips credentials, hop-by-hop, Connection-named and address headers, injects x-api-key", () => {
        expect(upstreamRequestHeaders(incoming, spec("anthropic"), "REAL")).toEqual({
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "prompt-caching-2024-07-31",
            "content-type": "application/json",
            "content-length": "12",
            "accept-encoding": "identity",
            "x-api-key": "REAL",
        });
    });

    it("for OpenAI: injects the bearer key and nothing of the agent's", () => {
        const out = upstreamRequestHeaders(incoming, spec("openai"), "REAL");
        expect(out.authorization).toBe("Bearer REAL");
        expect(out["x-api-key"]).toBeUndefined();
        expect(JSON.stringify(out)).not.toContain("ocp_agent_token");
        expect(JSON.stringify(out)).not.toContain("10.64.0.4");
    });

    it("strips hop-by-hop and cookies from responses", () => {
        expect(clientResponseHeaders({ connection: "close, x-a", "x-a": "1", "Transfer-Encoding": "chunked", "set-cookie": ["a=b"], "content-type": "text/event-stream" }, [])).toEqual({
            "content-type": "text/event-stream",
        });
    });
});

describe("credentials", () => {
    const entries: AgentEntry[] = [
        { name: "bart", credentialSha256: credentialDigest("ocp_good"), subnet: "10.64.1.0/28" },
        { name: "homer", credentialSha256: credentialDigest("ocp_homer"), port: 20001 },
        { name: "marge", credentialSha256: credentialDigest("ocp_marge"), port: 20002 },
    ];
    const agents = new Map(entries.map((e) => [e.credentialSha256, e]));
    const [bart, homer, marge] = entries;
    const from = (remoteAddress: string | undefined): Arrival => ({ via: "network", remoteAddress });
    const onPort = (port: number): Arrival => ({ via: "port", port });

    it.each<[string | undefined, Arrival, ReturnType<typeof authenticate>]>([
        ["ocp_good", from("10.64.1.4"), { ok: true, agent: bart }],
        ["ocp_good", from("::ffff:10.64.1.4"), { ok: true, agent: bart }],
        ["ocp_good", from("10.64.1.20"), { ok: false, reason: "wrong_network", credentialOf: "bart" }],
        ["ocp_good", from("10.64.2.4"), { ok: false, reason: "wrong_network", credentialOf: "bart" }],
        ["ocp_good", from(undefined), { ok: false, reason: "wrong_network", credentialOf: "bart" }],
        ["ocp_good", from("fe80::1"), { ok: false, reason: "wrong_network", credentialOf: "bart" }],
        ["ocp_goo", from("10.64.1.4"), { ok: false, reason: "unknown" }],
        ["ocp_good ", from("10.64.1.4"), { ok: false, reason: "unknown" }],
        ["", from("10.64.1.4"), { ok: false, reason: "unknown" }],
        [undefined, from("10.64.1.4"), { ok: false, reason: "missing" }],
        // Port identity: the agent registered for the port the connection arrived on, whatever its source.
        ["ocp_homer", onPort(20001), { ok: true, agent: homer }],
        ["ocp_marge", onPort(20002), { ok: true, agent: marge }],
        ["ocp_homer", onPort(20002), { ok: false, reason: "wrong_port", credentialOf: "homer" }],
        ["ocp_marge", onPort(20001), { ok: false, reason: "wrong_port", credentialOf: "marge" }],
        ["ocp_homer", onPort(8080), { ok: false, reason: "wrong_port", credentialOf: "homer" }],
        ["ocp_homer", from("10.64.1.4"), { ok: false, reason: "wrong_port", credentialOf: "homer" }],
        ["ocp_homer", from("127.0.0.1"), { ok: false, reason: "wrong_port", credentialOf: "homer" }],
        ["ocp_good", onPort(20001), { ok: false, reason: "wrong_network", credentialOf: "bart" }],
        ["ocp_nobody", onPort(20001), { ok: false, reason: "unknown" }],
        [undefined, onPort(20001), { ok: false, reason: "missing" }],
    ])("%j arriving %j", (credential, arrival, expected) => expect(authenticate(credential, arrival, agents)).toEqual(expected));

    it.each<[Record<string, string>, "anthropic" | "openai", string | undefined]>([
        [{ "x-api-key": "t" }, "anthropic", "t"],
        [{ authorization: "Bearer t" }, "anthropic", "t"],
        [{ "x-api-key": "t", authorization: "Bearer t" }, "anthropic", "t"],
        [{ "x-api-key": "t", authorization: "Bearer u" }, "anthropic", undefined],
        [{ authorization: "Basic t" }, "anthropic", undefined],
        [{ authorization: "Bearer t" }, "openai", "t"],
        [{ authorization: "bearer t" }, "openai", undefined],
        [{ authorization: "Bearer t u" }, "openai", undefined],
        [{ "x-api-key": "t" }, "openai", undefined],
    ])("reads %j for %s", (headers, provider, expected) => expect(presentedCredential(headers, spec(provider))).toBe(expected));
});

describe("errors and scrubbing", () => {
    it("speaks each provider's error shape", () => {
        expect(JSON.parse(providerError(spec("anthropic"), "authentication").body)).toEqual({ type: "error", error: { type: "authentication_error", message: "invalid credential" } });
        expect(JSON.parse(providerError(spec("openai"), "authentication").body)).toEqual({
            error: { message: "invalid credential", type: "invalid_request_error", param: null, code: "invalid_api_key" },
        });
        expect(providerError(spec("openai"), "rate_limited").status).toBe(429);
        expect(providerError(spec("anthropic"), "too_large").status).toBe(413);
    });

    it.each([
        [`Incorrect API key provided: ${fakeKey("openai", "abc1****************wxyz")}. See docs.`, "Incorrect API key provided: [redacted]. See docs."],
        [`key ${fakeKey("anthropic", "AAAABBBBCCCC-DDDD")} leaked`, "key [redacted] leaked"],
        ["token ocp_abcdefgh rejected", "token [redacted] rejected"],
        ["the REALSECRETVALUE was echoed", "the [redacted] was echoed"],
        ["no secrets here: task-123 and sk-", "no secrets here: task-123 and sk-"],
    ])("scrubs %j", (input, expected) => expect(scrubSecrets(input, ["REALSECRETVALUE"])).toBe(expected));
});
