// The agent's OpenClaw config and dashboard origins, as pure functions: what the config writer uploads.
import { describe, expect, it } from "vitest";
import { agentEnvironment, dashboardOrigins, openClawConfig } from "../components/agentSandbox";
import { type AgentConfig, enabledProviders, parseStackConfig } from "../infra/config";
import { devConfig } from "./support/mockStack";

const KEY_PROXY_URL = "http://10.64.0.2:8080";
const CREDENTIAL = `ocp_${"c".repeat(48)}`;
const TOKEN = "t".repeat(40);
const dev = parseStackConfig(devConfig());
const [bart, lisa] = dev.agents;

const configOf = (agent: AgentConfig, origins = dashboardOrigins(agent.dashboardPort)) =>
    openClawConfig({ agent, providers: enabledProviders(dev.keyProxy), keyProxyUrl: KEY_PROXY_URL, credential: CREDENTIAL, dashboardToken: TOKEN, dashboardOrigins: origins });

/** Every path in a JSON value whose string holds `needle`. */
function pathsHolding(value: unknown, needle: string, at = ""): string[] {
    if (typeof value === "string") return value.includes(needle) ? [at] : [];
    if (value && typeof value === "object") return Object.entries(value).flatMap(([key, child]) => pathsHolding(child, needle, at ? `${at}.${key}` : key));
    return [];
}

describe.each([
    ["bart", bart],
    ["lisa", lisa],
])("openClawConfig for %s", (_name, agent) => {
    const config = configOf(agent);

    it("declares the providers itself (models.mode replace), each through KeyProxy, with no hosted catalog refresh", () => {
        expect(config.models.mode).toBe("replace");
        expect(config.models.catalogRefresh).toEqual({ enabled: false });
        expect(Object.keys(config.models.providers).sort()).toEqual(["anthropic", "openai"]);
        expect(config.models.providers.anthropic).toMatchObject({ baseUrl: `${KEY_PROXY_URL}/anthropic`, api: "anthropic-messages" });
        expect(config.models.providers.openai).toMatchObject({ baseUrl: `${KEY_PROXY_URL}/openai/v1`, api: "openai-completions" });
    });

    it("gives the credential only as the apiKey of both providers", () => {
        expect(pathsHolding(config, CREDENTIAL).sort()).toEqual(["models.providers.anthropic.apiKey", "models.providers.openai.apiKey"]);
        expect(config.models.providers.anthropic.apiKey).toBe(CREDENTIAL);
        expect(config.models.providers.openai.apiKey).toBe(CREDENTIAL);
    });

    it("declares the agent's model under its own provider and nowhere else, and makes it the default", () => {
        const [provider, id] = [agent.model.split("/")[0], agent.model.slice(agent.model.indexOf("/") + 1)];
        const other = provider === "anthropic" ? "openai" : "anthropic";
        expect(config.models.providers[provider as "anthropic"].models).toEqual([{ id, name: id }]);
        expect(config.models.providers[other as "openai"].models).toEqual([]);
        expect(config.agents.defaults.model.primary).toBe(agent.model);
    });

    it("turns telemetry, update checks and mDNS off", () => {
        expect(config.telemetry).toEqual({ enabled: false });
        expect(config.update).toEqual({ checkOnStart: false, auto: { enabled: false } });
        expect(config.discovery).toEqual({ mdns: { mode: "off" } });
    });

    it("keeps the gateway's OpenAI-compatible HTTP endpoints off", () => {
        expect(config.gateway.http.endpoints).toEqual({ chatCompletions: { enabled: false }, responses: { enabled: false } });
    });

    it("guards the dashboard: token auth, rate-limited sign-ins, only the forwarded origins", () => {
        expect(config.gateway).toMatchObject({ mode: "local", bind: "lan", port: 18789 });
        expect(config.gateway.auth).toEqual({ mode: "token", token: TOKEN, rateLimit: { maxAttempts: 10, windowMs: 60_000, lockoutMs: 300_000 } });
        expect(config.gateway.controlUi.allowedOrigins).toEqual(dashboardOrigins(agent.dashboardPort));
    });
});

describe("openClawConfig behind the Ingress", () => {
    const ingress = { address: "10.64.0.5", users: ["ann", "ned"], origins: ["https://127.0.0.1:8443"] };
    const config = openClawConfig({ agent: bart, providers: enabledProviders(dev.keyProxy), keyProxyUrl: KEY_PROXY_URL, credential: CREDENTIAL, dashboardToken: TOKEN, dashboardOrigins: dashboardOrigins(bart.dashboardPort), ingress });

    it("trusts only the Ingress's address to name the user, only those users, capped to reading and chatting", () => {
        expect(config.gateway).toMatchObject({ trustedProxies: ["10.64.0.5"] });
        expect(config.gateway.auth).toEqual({
            mode: "trusted-proxy",
            password: TOKEN,
            rateLimit: { maxAttempts: 10, windowMs: 60_000, lockoutMs: 300_000 },
            trustedProxy: { userHeader: "x-forwarded-user", requiredHeaders: ["x-forwarded-proto", "x-forwarded-host"], allowUsers: ["ann", "ned"], deviceAutoApprove: { enabled: true, scopes: ["operator.read", "operator.write"] } },
        });
    });

    it("serves the Control UI under /agents/<name> to the Ingress's origins and the forwarded dashboard's", () => {
        expect(config.gateway.controlUi).toEqual({ basePath: "/agents/bart", allowedOrigins: [...dashboardOrigins(bart.dashboardPort), "https://127.0.0.1:8443"] });
    });

    it("turns on chat completions, never the responses endpoint", () => {
        expect(config.gateway.http.endpoints).toEqual({ chatCompletions: { enabled: true }, responses: { enabled: false } });
    });
});

describe("openClawConfig options", () => {
    it("turns on chat completions only when the agent asks, and never the responses endpoint", () => {
        expect(configOf({ ...bart, chatCompletionsApi: true }).gateway.http.endpoints).toEqual({ chatCompletions: { enabled: true }, responses: { enabled: false } });
    });

    it("allows exactly the origins it is given", () => {
        expect(configOf(bart, ["http://10.20.30.40:18801"]).gateway.controlUi.allowedOrigins).toEqual(["http://10.20.30.40:18801"]);
    });
});

describe("dashboardOrigins", () => {
    it.each<[number, string[]]>([
        [18801, ["http://127.0.0.1:18801", "http://localhost:18801"]],
        [28000, ["http://127.0.0.1:28000", "http://localhost:28000"]],
    ])("the forwarded port %i allows %j: loopback by address and by name, nothing else", (port, origins) => expect(dashboardOrigins(port)).toEqual(origins));
});

describe("agentEnvironment", () => {
    const envs = agentEnvironment("http://10.64.0.3:3128", "10.64.0.2");

    it("says where the read-only config and the writable state are, and turns auto-update and tracking off", () => {
        expect(envs).toEqual(
            expect.arrayContaining([
                "OPENCLAW_CONFIG_PATH=/etc/openclaw/openclaw.json",
                "OPENCLAW_STATE_DIR=/home/node/.openclaw",
                "OPENCLAW_CONFIG_READONLY=1",
                "OPENCLAW_NO_AUTO_UPDATE=1",
                "DO_NOT_TRACK=1",
            ]),
        );
    });

    it("sends everything but KeyProxy through the egress proxy", () => {
        expect(envs).toEqual(expect.arrayContaining(["HTTP_PROXY=http://10.64.0.3:3128", "https_proxy=http://10.64.0.3:3128", "NO_PROXY=10.64.0.2,key-proxy,localhost,127.0.0.1"]));
    });

    it("holds no provider key, credential or provider URL", () => {
        expect(envs.filter((e) => /^[A-Z_]*(API_KEY|TOKEN|BASE_URL)=/i.test(e))).toEqual([]);
    });
});
