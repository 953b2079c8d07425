// Google Gemini through the provider registry: routing, credential binding, key handling, metering and budgets
// (pure, then over real sockets against the loopback mock upstream), and what the program derives for it.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { builtInProvider } from "../providers/index";
import { geminiUsage } from "../providers/gemini";
import { openClawConfig } from "../components/agentSandbox";
import { keyProxyRuntimeConfig } from "../components/keyProxy";
import { enabledProviders, parseStackConfig } from "../infra/config";
import { CONTAINER, evaluate } from "../policy/policies";
import { ResponseMeter, classifyEndpoint, planRequest } from "../proxy-image/src/metering";
import { decideRoute, presentedCredential, providerError, scrubSecrets, upstreamRequestHeaders, upstreamTarget } from "../proxy-image/src/policy";
import { DEFAULT_FALLBACK_PRICE, DEFAULT_PRICES, priceFor } from "../proxy-image/src/pricing";
import { fakeKey } from "./support/fakeKeys";
import { AGENTS, GEMINI_BODY, REAL_KEYS, type RunningProxy, TOKENS, closeAndCheckNoSecretLeaked, geminiHeaders, send, startKeyProxy } from "./support/keyProxyHarness";
import { GEMINI_USAGE, MockUpstream, geminiResponse, geminiStream } from "./support/mockUpstream";
import { devConfig } from "./support/mockStack";

const gemini = builtInProvider("gemini")!;
const GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent";
const STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";

describe("routing", () => {
    it.each<[string, string, string | undefined]>([
        ["POST", GENERATE, "gemini-generate"],
        ["POST", STREAM, "gemini-generate"],
        ["POST", "/v1/models/gemini-2.5-pro:generateContent", "gemini-generate"],
        ["POST", "/v1beta/models/gemini-2.5-flash:countTokens", "free"],
        ["GET", "/v1beta/models", "free"],
        ["GET", "/v1beta/models/gemini-2.5-flash", "free"],
        ["POST", "/v1beta/models/gemini-2.5-flash:embedContent", undefined],
        ["POST", "/v1beta/models/gemini-2.5-flash:batchGenerateContent", undefined],
        ["POST", "/v1beta/cachedContents", undefined],
        ["POST", "/upload/v1beta/files", undefined],
        ["GET", GENERATE, undefined],
        ["DELETE", "/v1beta/models/gemini-2.5-flash", undefined],
        ["POST", "/v1beta/tunedModels/x:generateContent", undefined],
    ])("%s %s -> %s", (method, route, expected) => expect(classifyEndpoint(gemini, method, route)).toBe(expected));

    it.each<[string, string]>([
        [`/gemini${GENERATE}`, GENERATE],
        [`/gemini${STREAM}?alt=sse`, `${STREAM}?alt=sse`],
        [`/gemini${STREAM}?alt=sse&key=${TOKENS.bart}`, `${STREAM}?alt=sse`],
        [`/gemini${STREAM}?key=${TOKENS.bart}&alt=sse`, `${STREAM}?alt=sse`],
        [`/gemini${GENERATE}?key=${TOKENS.bart}`, GENERATE],
        [`/gemini${GENERATE}?%6Bey=${TOKENS.bart}`, GENERATE],
        [`/gemini${GENERATE}?key=a&key=b&keyword=1`, `${GENERATE}?keyword=1`],
    ])("%s goes upstream as %s: no key= ever in the upstream URL", (target, expected) => {
        const decision = decideRoute("POST", target, new Set(["gemini"]));
        expect(decision).toMatchObject({ action: "forward", provider: "gemini" });
        expect(decision.action === "forward" && upstreamTarget(decision, gemini)).toBe(expected);
    });
});

describe("credential binding", () => {
    it.each<[string, Record<string, string>, string, string | undefined]>([
        ["the x-goog-api-key header", { "x-goog-api-key": "ocp_a" }, "", "ocp_a"],
        ["the key query parameter", {}, "?key=ocp_a", "ocp_a"],
        ["a percent-encoded key", {}, "?key=ocp%5Fa", "ocp_a"],
        ["header and query agreeing", { "x-goog-api-key": "ocp_a" }, "?key=ocp_a", "ocp_a"],
        ["header and query disagreeing", { "x-goog-api-key": "ocp_a" }, "?key=ocp_b", undefined],
        ["two different key parameters", {}, "?key=ocp_a&key=ocp_b", undefined],
        ["an empty key parameter", {}, "?key=", undefined],
        ["a bearer token (not how Gemini SDKs send a key)", { authorization: "Bearer ocp_a" }, "", undefined],
        ["Anthropic's header", { "x-api-key": "ocp_a" }, "", undefined],
        ["nothing", {}, "?alt=sse", undefined],
    ])("reads %s", (_case, headers, query, expected) => expect(presentedCredential(headers, gemini, query)).toBe(expected));

    it("attaches the real key as x-goog-api-key only, never the agent's", () => {
        const out = upstreamRequestHeaders({ "x-goog-api-key": TOKENS.bart, authorization: "Bearer x", "content-type": "application/json" }, gemini, "REAL");
        expect(out).toEqual({ "x-goog-api-key": "REAL", "content-type": "application/json", "accept-encoding": "identity" });
    });

    it.each<[Parameters<typeof providerError>[1], number, string]>([
        ["authentication", 401, "UNAUTHENTICATED"],
        ["budget", 429, "RESOURCE_EXHAUSTED"],
        ["forbidden", 403, "PERMISSION_DENIED"],
        ["timeout", 504, "DEADLINE_EXCEEDED"],
    ])("answers %s in Gemini's error shape", (kind, status, code) => {
        const error = providerError(gemini, kind);
        expect(error.status).toBe(status);
        expect(JSON.parse(error.body)).toEqual({ error: { code: status, message: expect.any(String), status: code } });
    });

    it("scrubs Gemini-shaped keys from upstream errors", () => {
        const key = fakeKey("gemini", "SyD-abcdefghijklmnopqrstuvwxyz01234");
        expect(scrubSecrets(`API key not valid: ${key}.`, [])).toBe("API key not valid: [redacted].");
    });
});

describe("metering (pure)", () => {
    const plan = (route: string, query: string, body: unknown) => planRequest("gemini-generate", Buffer.from(JSON.stringify(body)), 32_000, { route, query });

    it("takes the model from the path and writes the default cap into generationConfig", () => {
        const result = plan(GENERATE, "", { contents: [], generationConfig: { temperature: 0.2 } });
        expect(result).toMatchObject({ kind: "metered", model: "gemini-2.5-flash", stream: false, maxOutputTokens: 32_000 });
        expect(result.kind === "metered" && JSON.parse(result.body.toString()).generationConfig).toEqual({ temperature: 0.2, maxOutputTokens: 32_000 });
    });

    it("keeps a request with its own cap byte for byte, and streams only with alt=sse", () => {
        const body = '{"contents":[],"generationConfig":{"maxOutputTokens":50}}';
        const result = planRequest("gemini-generate", Buffer.from(body), 32_000, { route: STREAM, query: "?alt=sse" });
        expect(result).toMatchObject({ kind: "metered", stream: true, maxOutputTokens: 50 });
        expect(result.kind === "metered" && result.body.toString()).toBe(body);
    });

    it.each<[string, string, unknown, string]>([
        ["a stream without alt=sse (one JSON array)", STREAM, {}, "stream_needs_alt_sse"],
        ["a negative cap", GENERATE, { generationConfig: { maxOutputTokens: -1 } }, "bad_output_cap"],
        ["a string cap", GENERATE, { generationConfig: { maxOutputTokens: "9" } }, "bad_output_cap"],
        ["a generationConfig that is not an object", GENERATE, { generationConfig: [1] }, "bad_output_cap"],
    ])("refuses %s", (_case, route, body, reason) => expect(plan(route, route === STREAM ? "?alt=json" : "", body)).toEqual({ kind: "refused", reason }));

    it("reads usageMetadata: cached tokens apart from input, thinking tokens as output", () => {
        expect(geminiUsage(GEMINI_USAGE)).toEqual({ input: 8, output: 10, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 3 });
        // Tool-use prompt tokens are input; a total beyond the named counts is billed as output.
        expect(geminiUsage({ promptTokenCount: 5, toolUsePromptTokenCount: 2, candidatesTokenCount: 1, totalTokenCount: 12 })).toEqual({ input: 7, output: 5, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 0 });
    });

    it("meters a JSON answer", () => {
        const meter = new ResponseMeter("gemini-generate", false, false, 64);
        meter.push(Buffer.from(JSON.stringify(geminiResponse("gemini-2.5-pro"))));
        const { result } = meter.end();
        expect(result).toMatchObject({ complete: true, reported: true, unmeasured: false, model: "gemini-2.5-pro", problems: [] });
        expect(result.usage).toEqual({ input: 8, output: 10, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 3 });
    });

    const stream = geminiStream().join("");
    it("meters an SSE stream cut at every byte offset the same, and forwards it untouched", () => {
        const bytes = Buffer.from(stream);
        for (let cut = 1; cut < bytes.length; cut++) {
            const meter = new ResponseMeter("gemini-generate", true, false, 64);
            const out = [...meter.push(bytes.subarray(0, cut)), ...meter.push(bytes.subarray(cut))];
            const { result, rest } = meter.end();
            expect(Buffer.concat([...out, ...rest]).toString()).toBe(stream);
            expect(result).toMatchObject({ complete: true, reported: true, model: "gemini-2.5-flash", problems: [] });
            expect(result.usage).toEqual({ input: 8, output: 10, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 3 });
        }
    });

    it("takes a prompt blocked in a stream (feedback, no candidates) as a finished answer with no output", () => {
        const blocked = `data: ${JSON.stringify({ promptFeedback: { blockReason: "SAFETY" }, usageMetadata: { promptTokenCount: 7, totalTokenCount: 7 }, modelVersion: "gemini-2.5-flash" })}\r\n\r\n`;
        const meter = new ResponseMeter("gemini-generate", true, false, 64);
        meter.push(Buffer.from(blocked));
        const { result } = meter.end();
        expect(result).toMatchObject({ complete: true, problems: [] });
        expect(result.usage).toEqual({ input: 7, output: 0, cacheWrite: 0, cacheWrite1h: 0, cacheRead: 0 });
    });

    it("bills a stream cut before its last chunk by its bytes, never past the cap", () => {
        const first = geminiStream()[0];
        const meter = new ResponseMeter("gemini-generate", true, false, 5);
        meter.push(Buffer.from(first));
        const { result } = meter.end();
        expect(result.complete).toBe(false);
        expect(result.usage.output).toBe(5);
        expect(result.usage.input).toBe(11);
    });

    it.each<[string, number, number]>([
        ["gemini-2.5-pro", 2.5, 15],
        ["gemini-2.5-flash-preview-09-2025", 1, 2.5],
        ["gemini-2.5-flash-lite", 0.3, 0.4],
        ["gemini-3-pro-preview", 4, 18],
    ])("prices %s at its dearest list rate", (model, input, output) => {
        const { price, known } = priceFor({ prices: DEFAULT_PRICES, fallback: DEFAULT_FALLBACK_PRICE }, model);
        expect(known).toBe(true);
        expect([price.input, price.output]).toEqual([input, output]);
    });
});

describe("over sockets", () => {
    const upstream = new MockUpstream();
    let main: RunningProxy;
    const observed: string[] = [];
    beforeAll(async () => {
        await upstream.start();
        main = await startKeyProxy(upstream);
    });
    afterEach(() => {
        upstream.handler = undefined;
        upstream.received.length = 0;
    });
    afterAll(() => closeAndCheckNoSecretLeaked([main], upstream, observed, [...Object.values(REAL_KEYS), ...Object.values(TOKENS)]));
    const call = async (request: Parameters<typeof send>[1]) => {
        const response = await send(main.port, request);
        observed.push(JSON.stringify(response.headers), response.body);
        return response;
    };

    it.each<[string, string, Record<string, string>]>([
        ["in x-goog-api-key", `/gemini${GENERATE}`, geminiHeaders()],
        ["in ?key=", `/gemini${GENERATE}?key=${TOKENS.bart}`, { "content-type": "application/json" }],
    ])("forwards a credential presented %s with the real key as a header, never in the URL", async (_case, path, headers) => {
        const res = await call({ path, headers, body: GEMINI_BODY });
        expect(res.status).toBe(200);
        expect(JSON.parse(res.body)).toEqual(geminiResponse());
        const seen = upstream.received[0];
        expect(seen.path).toBe(GENERATE);
        expect(seen.headers["x-goog-api-key"]).toBe(REAL_KEYS.gemini);
        expect(JSON.stringify(seen)).not.toContain(TOKENS.bart);
        expect(main.logs.join("\n")).not.toContain("key=");
    });

    it("streams the SSE answer byte for byte and meters it", async () => {
        const before = main.server.spend.settled("bart", "total");
        const res = await call({ path: `/gemini${STREAM}?alt=sse`, headers: geminiHeaders(), body: GEMINI_BODY });
        expect(res.status).toBe(200);
        expect(res.body).toBe(geminiStream().join(""));
        expect(upstream.received[0].path).toBe(`${STREAM}?alt=sse`);
        // 8 input at $1, 3 cached at $0.10, 10 output at $2.50 per million.
        expect(main.server.spend.settled("bart", "total") - before).toBeCloseTo(Math.ceil(8 * 1 + 3 * 0.1 + 10 * 2.5) / 1e6, 9);
    });

    it.each<[string, Record<string, string>, string]>([
        ["lisa's credential from outside her network", geminiHeaders(TOKENS.lisa), ""],
        ["an unknown credential", geminiHeaders("ocp_unknown"), ""],
        ["header and query naming two agents", geminiHeaders(TOKENS.bart), `?key=${TOKENS.lisa}`],
    ])("refuses %s with 401 in Gemini's shape, upstream untouched", async (_case, headers, query) => {
        const res = await call({ path: `/gemini${GENERATE}${query}`, headers, body: GEMINI_BODY });
        expect(res.status).toBe(401);
        expect(JSON.parse(res.body).error).toMatchObject({ code: 401, status: "UNAUTHENTICATED" });
        expect(upstream.received).toHaveLength(0);
    });

    it("refuses an endpoint it cannot meter with 403", async () => {
        const res = await call({ path: "/gemini/v1beta/models/gemini-2.5-flash:embedContent", headers: geminiHeaders(), body: "{}" });
        expect(res.status).toBe(403);
        expect(upstream.received).toHaveLength(0);
    });

    it("answers 429 RESOURCE_EXHAUSTED past the budget without calling upstream", async () => {
        const poor = await startKeyProxy(upstream);
        poor.server.setAgents([{ ...AGENTS[0], budget: { dailyUsd: 0.0001 } }, AGENTS[1]]);
        try {
            const res = await send(poor.port, { path: `/gemini${GENERATE}`, headers: geminiHeaders(), body: GEMINI_BODY });
            expect(res.status).toBe(429);
            expect(JSON.parse(res.body).error).toMatchObject({ code: 429, status: "RESOURCE_EXHAUSTED" });
            expect(upstream.received).toHaveLength(0);
        } finally {
            await poor.server.close();
        }
    });
});

describe("what the program derives", () => {
    const withGemini = () => ({ ...devConfig(), keyProxy: { providers: { anthropic: {}, openai: {}, gemini: {} } }, geminiApiKey: fakeKey("gemini", "F".repeat(35)) });

    it("needs geminiApiKey once Gemini is enabled, and names the fix", () => {
        const { geminiApiKey: _unset, ...raw } = withGemini();
        expect(() => parseStackConfig(raw)).toThrow(/openclaw:geminiApiKey: missing secret: .*pulumi config set --secret geminiApiKey/);
    });

    it("accepts an agent on a Gemini model only when Gemini is enabled", () => {
        const raw = devConfig();
        (raw.agents as Record<string, unknown>[])[0].model = "gemini/gemini-2.5-flash";
        expect(() => parseStackConfig(raw)).toThrow(/provider 'gemini' is not enabled/);
        expect(parseStackConfig({ ...withGemini(), agents: raw.agents }).agents[0].model).toBe("gemini/gemini-2.5-flash");
    });

    it("points the agent's OpenClaw at /gemini/v1beta with the google-generative-ai api, and KeyProxy at Google", () => {
        const config = parseStackConfig(withGemini());
        const providers = enabledProviders(config.keyProxy);
        const openClaw = openClawConfig({ agent: config.agents[0], providers, keyProxyUrl: "http://10.64.0.2:8080", credential: "ocp_x", dashboardToken: "t", dashboardOrigins: [] });
        expect(openClaw.models.providers.gemini).toMatchObject({ baseUrl: "http://10.64.0.2:8080/gemini/v1beta", apiKey: "ocp_x", api: "google-generative-ai" });
        expect(keyProxyRuntimeConfig(config.keyProxy).upstreams.gemini).toEqual({ kind: "gemini", baseUrl: "https://generativelanguage.googleapis.com" });
        expect(config.providerKeys.gemini).toBe(withGemini().geminiApiKey);
    });

    it("the policy pack finds a Gemini key outside KeyProxy's key variable, and allows it there", () => {
        const key = fakeKey("gemini", "G".repeat(35));
        const container = (envs: string[], role: string) => ({ type: CONTAINER, urn: "urn:c", name: "c", props: { envs, labels: [{ label: "openclaw.role", value: role }] } });
        const verdicts = (envs: string[], role: string) => evaluate([container(envs, role)]).filter((v) => v.policy === "no-provider-keys");
        expect(verdicts([`GOOGLE_API_KEY=${key}`], "agent").map((v) => v.message).join()).toMatch(/env GOOGLE_API_KEY holds a value shaped like a provider API key/);
        expect(verdicts([`KEYPROXY_KEY_GEMINI=${key}`], "key-proxy")).toEqual([]);
    });
});
