// OpenAI-compatible endpoints: one kind a stack instantiates several times, each under its own route prefix with
// its own base URL, key and prices. Config and program (under mocks), then KeyProxy over loopback sockets.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { keyProxyRuntimeConfig } from "../components/keyProxy";
import { enabledProviders, parseStackConfig, providerSecrets } from "../infra/config";
import { ResponseMeter } from "../proxy-image/src/metering";
import { AGENTS, type RunningProxy, TOKENS, closeAndCheckNoSecretLeaked, openaiHeaders, send, startKeyProxy } from "./support/keyProxyHarness";
import { MockUpstream, openaiStream } from "./support/mockUpstream";
import { FAKE_SECRETS, TYPES, agentConfigUpload, byType, devConfig, reveal, runProgram } from "./support/mockStack";

const PRICE = { input: 3, output: 15, cacheWrite: 3, cacheWrite1h: 3, cacheRead: 0.3 };
const INSTANCES = [
    { id: "openrouter", baseUrl: "https://openrouter.ai/api", prices: { "anthropic/claude-sonnet-4.5": PRICE } },
    { id: "deepseek", baseUrl: "https://api.deepseek.com" },
];
const SECRETS = { openrouterApiKey: `or-${"K".repeat(40)}`, deepseekApiKey: `ds-${"D".repeat(40)}` };
const withInstances = (instances: unknown[] = INSTANCES, secrets: Record<string, unknown> = SECRETS) => ({
    ...devConfig(),
    keyProxy: { providers: { anthropic: {}, openai: {}, openaiCompatible: instances } },
    ...secrets,
});

describe("config", () => {
    it("enables each instance under its id with its own secret, base URL and prices", () => {
        const config = parseStackConfig(withInstances());
        expect(enabledProviders(config.keyProxy).map((p) => [p.id, p.kind, p.secretKey])).toEqual([
            ["anthropic", "anthropic", "anthropicApiKey"],
            ["openai", "openai", "openaiApiKey"],
            ["openrouter", "openai-compatible", "openrouterApiKey"],
            ["deepseek", "openai-compatible", "deepseekApiKey"],
        ]);
        expect(config.providerKeys).toMatchObject({ openrouter: SECRETS.openrouterApiKey, deepseek: SECRETS.deepseekApiKey });
        expect(keyProxyRuntimeConfig(config.keyProxy).upstreams).toMatchObject({
            openrouter: { kind: "openai-compatible", baseUrl: "https://openrouter.ai/api", prices: { "anthropic/claude-sonnet-4.5": PRICE } },
            deepseek: { kind: "openai-compatible", baseUrl: "https://api.deepseek.com" },
        });
        expect(providerSecrets(withInstances()).slice(-2)).toEqual([
            { secretKey: "openrouterApiKey", env: "OPENROUTER_API_KEY" },
            { secretKey: "deepseekApiKey", env: "DEEPSEEK_API_KEY" },
        ]);
    });

    it.each<[string, () => Record<string, unknown>, RegExp]>([
        ["an instance without its secret", () => withInstances(INSTANCES, { openrouterApiKey: SECRETS.openrouterApiKey }), /openclaw:deepseekApiKey: missing secret: the real deepseek API key/],
        ["a secret no provider reads", () => ({ ...withInstances(), mistralApiKey: "x".repeat(20) }), /openclaw:mistralApiKey: unknown key/],
        ["a near-miss secret name", () => ({ ...withInstances(), openroutrApiKey: "x".repeat(20) }), /openclaw:openroutrApiKey: unknown key; did you mean 'openrouterApiKey'\?/],
        ["an empty secret", () => withInstances(INSTANCES, { ...SECRETS, deepseekApiKey: "" }), /openclaw:deepseekApiKey: is empty/],
        ["two instances with one id", () => withInstances([INSTANCES[1], INSTANCES[1]]), /openclaw:keyProxy\.providers\.openaiCompatible\[1\]\.id: 'deepseek' is already a provider's route/],
        ["an instance named like a built-in", () => withInstances([{ id: "openai", baseUrl: "https://example.com" }]), /openaiCompatible\[0\]\.id: 'openai' is already/],
        ["an id that is not a route word", () => withInstances([{ id: "Open Router", baseUrl: "https://example.com" }]), /openaiCompatible\[0\]\.id: must be a short lowercase name/],
        ["a plain-http base URL", () => withInstances([{ id: "vllm", baseUrl: "http://10.0.0.5:8000" }]), /openaiCompatible\[0\]\.baseUrl: must be an https:\/\/ URL/],
        ["an instance without a base URL", () => withInstances([{ id: "vllm" }]), /openaiCompatible\[0\]\.baseUrl: required/],
    ])("refuses %s, naming the key", (_case, raw, expected) => expect(() => parseStackConfig(raw())).toThrow(expected));

    it("accepts an agent on an instance's model, slashes and all", () => {
        const raw: Record<string, unknown> = withInstances();
        (raw.agents as Record<string, unknown>[])[0].model = "openrouter/anthropic/claude-sonnet-4.5";
        expect(parseStackConfig(raw).agents[0].model).toBe("openrouter/anthropic/claude-sonnet-4.5");
    });
});

describe("the program", () => {
    let resources: Awaited<ReturnType<typeof runProgram>>;
    beforeAll(async () => {
        resources = await runProgram(withInstances());
    });

    it("gives KeyProxy each instance's key in its own variable, and no agent any key", () => {
        const containers = byType(resources, TYPES.container);
        const envs: string[] = reveal(containers.find((c) => c.inputs.name === "openclaw-dev-key-proxy")!.inputs.envs);
        expect(envs).toEqual(expect.arrayContaining([`KEYPROXY_KEY_OPENROUTER=${SECRETS.openrouterApiKey}`, `KEYPROXY_KEY_DEEPSEEK=${SECRETS.deepseekApiKey}`, `KEYPROXY_KEY_ANTHROPIC=${FAKE_SECRETS.anthropicApiKey}`]));
        const others = JSON.stringify(resources.filter((r) => !(r.type === TYPES.container && r.inputs.name === "openclaw-dev-key-proxy")).map((r) => reveal(r.inputs)));
        for (const secret of Object.values(SECRETS)) expect(others).not.toContain(secret);
    });

    it("points the agent's OpenClaw at /<id>/v1 through KeyProxy with the openai-completions api", () => {
        const { providers } = agentConfigUpload(resources, "bart").models;
        expect(providers.openrouter).toMatchObject({ baseUrl: expect.stringMatching(/^http:\/\/[\d.]+:8080\/openrouter\/v1$/), api: "openai-completions", apiKey: expect.stringMatching(/^ocp_/) });
        expect(providers.deepseek.baseUrl).toMatch(/\/deepseek\/v1$/);
    });
});

describe("metering", () => {
    it("meters an OpenAI-compatible stream (extra fields and all) cut at every byte offset the same", () => {
        const usage = { prompt_tokens: 20, completion_tokens: 7, total_tokens: 27, cost: 0.00012 };
        const stream = openaiStream("anthropic/claude-sonnet-4.5", true, usage).join("").replaceAll('"object"', '"provider":"Anthropic","object"');
        const bytes = Buffer.from(stream);
        for (let cut = 1; cut < bytes.length; cut++) {
            const meter = new ResponseMeter("openai-chat", true, true, 64);
            const out = [...meter.push(bytes.subarray(0, cut)), ...meter.push(bytes.subarray(cut))];
            const { result, rest } = meter.end();
            const forwarded = Buffer.concat([...out, ...rest]).toString();
            expect(forwarded).not.toContain('"choices":[]');
            expect(result).toMatchObject({ complete: true, model: "anthropic/claude-sonnet-4.5", usage: { input: 20, output: 7 } });
        }
    });
});

describe("over sockets", () => {
    const upstream = new MockUpstream();
    const KEYS = { openrouter: SECRETS.openrouterApiKey, deepseek: SECRETS.deepseekApiKey };
    const proxies: RunningProxy[] = [];
    const observed: string[] = [];
    let main: RunningProxy;
    const start = async (budget?: { dailyUsd: number }) => {
        const p = await startKeyProxy(
            upstream,
            {
                upstreams: {
                    openrouter: { kind: "openai-compatible", baseUrl: upstream.baseUrl, prices: { "anthropic/claude-sonnet-4.5": PRICE } },
                    deepseek: { kind: "openai-compatible", baseUrl: upstream.baseUrl },
                },
            },
            true,
            undefined,
            KEYS,
        );
        if (budget) p.server.setAgents([{ ...AGENTS[0], budget }, AGENTS[1]]);
        proxies.push(p);
        return p;
    };
    beforeAll(async () => {
        await upstream.start();
        main = await start();
    });
    afterEach(() => {
        upstream.handler = undefined;
        upstream.received.length = 0;
    });
    afterAll(() => closeAndCheckNoSecretLeaked(proxies, upstream, observed, [...Object.values(KEYS), ...Object.values(TOKENS)]));
    const chat = (id: string, body: Record<string, unknown>, port = main.port) =>
        send(port, { path: `/${id}/v1/chat/completions`, headers: openaiHeaders(), body: JSON.stringify({ messages: [{ role: "user", content: "hi" }], max_completion_tokens: 50, ...body }) });

    it.each([
        ["openrouter", SECRETS.openrouterApiKey],
        ["deepseek", SECRETS.deepseekApiKey],
    ])("routes /%s/ with that instance's own key", async (id, key) => {
        const res = await chat(id, { model: "m" });
        observed.push(res.body);
        expect(res.status).toBe(200);
        expect(upstream.received[0].path).toBe("/v1/chat/completions");
        expect(upstream.received[0].headers.authorization).toBe(`Bearer ${key}`);
    });

    it("streams at the instance's own price, the usage chunk it asked for hidden", async () => {
        const before = main.server.spend.settled("bart", "total");
        const res = await chat("openrouter", { model: "anthropic/claude-sonnet-4.5", stream: true });
        observed.push(res.body);
        expect(res.body).toBe(openaiStream("anthropic/claude-sonnet-4.5", true).filter((event) => !event.includes('"choices":[]')).join(""));
        // The mock reports 9 prompt and 3 completion tokens: 9 x $3 + 3 x $15 per million.
        expect(main.server.spend.settled("bart", "total") - before).toBeCloseTo((9 * 3 + 3 * 15) / 1e6, 9);
    });

    it("bills a model the instance does not price at the fallback, and says so", async () => {
        const res = await chat("deepseek", { model: "deepseek-chat" });
        observed.push(res.body);
        expect(res.status).toBe(200);
        expect(main.logs.map((line) => JSON.parse(line))).toContainEqual(expect.objectContaining({ event: "unknown_model", provider: "deepseek", model: "deepseek-chat" }));
        expect(await main.server.metrics.registry.metrics()).toMatch(/keyproxy_unknown_model_requests_total\{agent="bart",provider="deepseek"\} [1-9]/);
    });

    it.each<[string, string, string, number]>([
        ["POST", "/openrouter/v1/responses", "{}", 403],
        ["POST", "/openrouter/v1/images/generations", "{}", 403],
        ["GET", "/mistral/v1/models", "", -1],
    ])("%s %s -> %i (-1: dropped unanswered)", async (method, path, body, status) => {
        const res = await send(main.port, { method, path, headers: openaiHeaders(), body }).catch(() => ({ status: -1, body: "" }));
        expect(res.status).toBe(status);
        expect(upstream.received).toHaveLength(0);
    });

    it("refuses lisa's credential from outside her network with 401 in OpenAI's shape", async () => {
        const res = await send(main.port, { path: "/openrouter/v1/chat/completions", headers: openaiHeaders(TOKENS.lisa), body: "{}" });
        expect(res.status).toBe(401);
        expect(JSON.parse(res.body).error).toMatchObject({ code: "invalid_api_key" });
    });

    it("scrubs the instance's real key from an upstream error that echoes it", async () => {
        upstream.handler = (_req, res) => {
            res.writeHead(401, { "content-type": "application/json", "x-echo": SECRETS.openrouterApiKey });
            res.end(JSON.stringify({ error: { message: `bad key ${SECRETS.openrouterApiKey}` } }));
        };
        const res = await chat("openrouter", { model: "m" });
        observed.push(JSON.stringify(res.headers), res.body);
        expect(res.status).toBe(401);
        expect(res.body).toContain("[redacted]");
    });

    it("answers 429 budget_exceeded past the budget without calling upstream", async () => {
        const poor = await start({ dailyUsd: 0.000001 });
        const res = await chat("deepseek", { model: "deepseek-chat" }, poor.port);
        expect(res.status).toBe(429);
        expect(JSON.parse(res.body).error).toMatchObject({ type: "budget_exceeded" });
        expect(upstream.received).toHaveLength(0);
    });
});
