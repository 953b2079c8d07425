// What the deployment hands each service image, checked against what the image parses, without Docker: the
// component's output goes through the image's own schema. (The type checker holds the shapes together too:
// each component builds its runtime config and registry entries as the contract's types.)
import { describe, expect, it } from "vitest";
import { agentNetworkAddresses } from "../contracts/agentNetwork";
import { agentEntrySchema, budgetSchema, ownPorts, runtimeConfigSchema } from "../contracts/keyProxy";
import { egressRegistryEntry, egressRuntimeConfig } from "../components/egressGateway";
import { ingressAgentEntry, ingressRuntimeConfig, ingressUserEntry } from "../components/ingress";
import { keyProxyRuntimeConfig, registryEntry } from "../components/keyProxy";
import { egressAgentSchema, egressConfigSchema, ownPorts as egressOwnPorts } from "../egress-image/src/config";
import { enabledProviders, parseStackConfig } from "../infra/config";
import { PORTS } from "../infra/topology";
import { TLS_ENV, ingressAgentSchema, ingressUserSchema, loadIngressConfig } from "../ingress-image/src/config";
import { USER_TOKEN, authenticate } from "../ingress-image/src/policy";
import { compileRules } from "../ingress-image/src/rules";
import { configuredProviders } from "../proxy-image/src/config";
import { devConfig } from "./support/mockStack";
import { testPki } from "./support/tls";

const PRICE = { input: 1, output: 2, cacheWrite: 1, cacheWrite1h: 1, cacheRead: 0.1 };
const everything = () => ({
    ...devConfig(),
    keyProxy: {
        providers: { anthropic: { baseUrl: "https://mirror.example/anthropic", keyEpoch: 3 }, openai: {}, gemini: {}, openaiCompatible: [{ id: "openrouter", baseUrl: "https://openrouter.ai/api", prices: { "x/y": PRICE } }] },
        prices: { "claude-sonnet-4-5": PRICE },
        fallbackPrice: PRICE,
        budgetTimeZone: "Europe/Berlin",
        defaultMaxOutputTokens: 1000,
        extraCaPem: testPki().ca,
    },
    geminiApiKey: "g".repeat(40),
    openrouterApiKey: "o".repeat(40),
});
const REMOTE_ADMIN = { host: "10.63.255.2", port: 9443, tls: { certPem: testPki().cert, keyPem: testPki().key }, bearerToken: "t".repeat(40) };

describe("KeyProxy", () => {
    it.each([
        ["the dev stack", devConfig, undefined],
        ["every provider kind, prices and a CA", everything, undefined],
        ["with the monitoring listener", everything, REMOTE_ADMIN],
    ])("parses the runtime config the component writes for %s, every provider resolved", (_case, raw, remote) => {
        const config = parseStackConfig(raw());
        const runtime = runtimeConfigSchema.parse(JSON.parse(JSON.stringify(keyProxyRuntimeConfig(config.keyProxy, remote))));
        const providers = configuredProviders(runtime);
        expect([...providers.keys()]).toEqual(enabledProviders(config.keyProxy).map((p) => p.id));
        for (const [id, spec] of providers) expect(spec.id).toBe(id);
    });

    it.each([{ dailyUsd: 1 }, { monthlyUsd: 2.5, totalUsd: 100 }, { dailyUsd: 0.01, monthlyUsd: 1, totalUsd: 10 }])("parses the registry entry the component writes for budget %j", (budget) => {
        const entry = agentEntrySchema(ownPorts(runtimeConfigSchema.parse({ upstreams: {} }))).parse(JSON.parse(registryEntry({ name: "bart", subnet: "10.64.0.16/28", budget }, "ocp_secret")));
        expect(entry.budget).toEqual(budget);
        expect(JSON.stringify(entry)).not.toContain("ocp_secret");
    });

    it("accepts every budget the stack config accepts: the stack's budget is the contract's, with one more rule", () => {
        for (const agent of parseStackConfig(everything()).agents) expect(budgetSchema.parse(agent.budget)).toEqual(agent.budget);
        expect(() => parseStackConfig({ ...devConfig(), agents: [{ name: "bart", dashboardPort: 18801, budget: {} }] })).toThrow(/set at least one of dailyUsd, monthlyUsd, totalUsd/);
    });
});

describe("EgressGateway", () => {
    it.each([[[]], [["10.0.0.0/24"]]])("parses the runtime config the component writes (allowPrivateRanges %j)", (allowPrivateRanges) => {
        expect(() => egressConfigSchema.parse(JSON.parse(JSON.stringify(egressRuntimeConfig({ allowPrivateRanges, auditRotation: { maxFileBytes: 1 << 20, keepSegments: 3 } }, REMOTE_ADMIN))))).not.toThrow();
    });

    it("parses the registry entry the component writes", () => {
        const config = parseStackConfig(devConfig());
        for (const agent of config.agents) {
            const entry = egressAgentSchema(egressOwnPorts(egressConfigSchema.parse({}))).parse(JSON.parse(egressRegistryEntry({ name: agent.name, subnet: agent.subnet, mode: agent.egress.mode, allow: agent.egress.allow }, config.egress)));
            expect(entry.name).toBe(agent.name);
        }
    });
});

describe("Ingress", () => {
    const users = [{ name: "ann", agents: ["bart"] }];
    it.each([
        ["the default rules and limits", { users }],
        ["rules and limits of its own", { users, rules: [{ id: "no-secrets", pattern: "api[_ ]key", action: "strip", roles: ["user", "tool"] }], limits: { ratePerSecond: 1, burst: 2, maxConcurrentPerUser: 3 } }],
    ])("loads the runtime config the component writes with %s, the certificate and key from their variables", (_case, ingress) => {
        const config = parseStackConfig({ ...devConfig(), ingress }).ingress!;
        const env: NodeJS.ProcessEnv = { INGRESS_CONFIG: JSON.stringify(ingressRuntimeConfig(config, "10.63.255.4")), [TLS_ENV.certPem]: testPki().cert, [TLS_ENV.keyPem]: testPki().key };
        const runtime = loadIngressConfig(env);
        expect(runtime.tls).toEqual({ certPem: testPki().cert, keyPem: testPki().key });
        expect(runtime.listen).toEqual({ host: "10.63.255.4", port: PORTS.ingress });
        expect(runtime.rules).toEqual(config.rules);
        expect(() => compileRules(runtime.rules)).not.toThrow();
        expect(runtime.limits).toMatchObject(config.limits);
    });

    it("parses the agent registry entry the component writes", () => {
        const entry = ingressAgentSchema.parse(JSON.parse(ingressAgentEntry({ name: "bart", gatewayAddress: "10.64.0.20" })));
        expect(entry).toEqual({ name: "bart", gateway: { host: "10.64.0.20", port: PORTS.agentDashboard } });
    });

    it("parses the user registry entry the component writes: the token's digest, which authenticates that token only", () => {
        const token = `${USER_TOKEN.prefix}${"a1".repeat(USER_TOKEN.randomChars / 2)}`;
        const written = ingressUserEntry({ name: "ann", agents: ["bart", "lisa"] }, token);
        expect(written).not.toContain(token);
        const user = ingressUserSchema.parse(JSON.parse(written));
        expect(user.agents).toEqual(["bart", "lisa"]);
        expect(authenticate(`Bearer ${token}`, [user])).toEqual({ ok: true, user });
        expect(authenticate(`Bearer ${token}x`, [user])).toEqual({ ok: false, reason: "bad_token" });
    });
});

describe("agent network layout", () => {
    it.each<[string, string | RegExp]>([
        ["10.64.1.32/28", "10.64.1.36"],
        ["10.64.1.0/24", "10.64.1.4"],
        ["10.64.1.248/29", "10.64.1.252"],
        ["10.64.1.33/28", /host bits set/],
        ["10.64.1.0/23", /between \/24 and \/29/],
        ["10.64.1.0/30", /between \/24 and \/29/],
        ["not a subnet", /./],
    ])("%s: the agent at %s", (subnet, expected) => {
        if (typeof expected === "string") expect(agentNetworkAddresses(subnet).agent).toBe(expected);
        else expect(() => agentNetworkAddresses(subnet)).toThrow(expected);
    });
});
