import { createHash } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { keyProxyRuntimeConfig } from "../components/keyProxy";
import { parseStackConfig } from "../infra/config";
import { agentNetworkAddresses, envEntries, serviceNodeOptions, serviceProcessEnv, uplinkAddresses } from "../infra/topology";
import { type RecordedResource, TYPES, agentConfigUpload, byType, devConfig, isSecret, reveal, runProgram } from "./support/mockStack";
import { fakeKey } from "./support/fakeKeys";

let dev: RecordedResource[];
beforeAll(async () => {
    dev = await runProgram(devConfig());
});

const find = (resources: RecordedResource[], type: string, name: string) => resources.find((r) => r.type === type && r.name === name)!;
const agents = parseStackConfig(devConfig()).agents;
const UPLINK = uplinkAddresses(parseStackConfig(devConfig()).network.uplinkSubnet);

describe("the KeyProxy container", () => {
    it("sits on the uplink only, publishes nothing, keeps its registry on a named volume", () => {
        const c = reveal(find(dev, TYPES.container, "key-proxy-container").inputs);
        expect(c.networksAdvanced).toEqual([{ name: "openclaw-dev-uplink", ipv4Address: UPLINK.keyProxy }]);
        expect(c.ports).toBeUndefined();
        expect(c.volumes).toEqual([{ volumeName: "openclaw-dev-key-proxy-data", containerPath: "/var/lib/keyproxy", readOnly: false }]);
        expect(c.healthcheck.tests).toEqual(["CMD", "/nodejs/bin/node", "/app/keyproxy.cjs", "healthcheck"]);
        expect(c.stopTimeout).toBeGreaterThan(30);
        const uplink = find(dev, TYPES.network, "uplink").inputs;
        expect(uplink.internal).toBeFalsy();
    });

    it("gets its upstreams from config, its metrics listener only on loopback, and its registry and audit stream on its volume", () => {
        const config = parseStackConfig({ ...devConfig(), keyProxy: { providers: { anthropic: { baseUrl: "https://mirror.example/anthropic" } } }, openaiApiKey: undefined, agents: [(devConfig().agents as any[])[0]] });
        expect(keyProxyRuntimeConfig(config.keyProxy)).toMatchObject({
            listen: { host: "0.0.0.0", port: 8080 },
            admin: [{ host: "127.0.0.1", port: 9464 }],
            upstreams: { anthropic: { baseUrl: "https://mirror.example/anthropic" } },
            registryDir: "/var/lib/keyproxy/agents",
            auditDir: "/var/lib/keyproxy/audit",
        });
        expect(keyProxyRuntimeConfig(config.keyProxy).upstreams).not.toHaveProperty("openai");
    });
});

describe.each([
    [256, 256],
    [512, 256],
    [2048, 1024],
    [4000, 2000],
])("serviceNodeOptions for a container of %i MB", (memoryMb, oldSpaceMb) => {
    it(`caps V8's old generation at ${oldSpaceMb} MB, with the 4 MB young generation`, () => {
        expect(serviceNodeOptions(memoryMb)).toBe(`--max-semi-space-size=4 --max-old-space-size=${oldSpaceMb}`);
    });
});

describe("the services' process environment", () => {
    const processEnv = (run: RecordedResource[], name: string) =>
        (reveal(find(run, TYPES.container, name).inputs).envs as string[]).filter((e) => /^(NODE_OPTIONS|MALLOC_[A-Z_]+)=/.test(e)).sort();

    it("follows each service's memory limit: Node options and glibc's allocator settings, in the container", async () => {
        const raw = { ...devConfig(), keyProxy: { resources: { memoryMb: 2048 } } };
        const run = await runProgram(raw);
        const config = parseStackConfig(raw);
        expect(processEnv(run, "key-proxy-container")).toEqual(["MALLOC_ARENA_MAX=2", "MALLOC_TOP_PAD_=0", "MALLOC_TRIM_THRESHOLD_=65536", "NODE_OPTIONS=--max-semi-space-size=4 --max-old-space-size=1024"]);
        const egress = serviceProcessEnv(config.egress.resources.memoryMb);
        expect(processEnv(run, "egress-gateway-container")).toEqual(envEntries(egress).sort());
    });
});

describe.each(agents.map((a) => [a.name, a] as const))("agent %s and KeyProxy", (name, agent) => {
    it("attaches the running proxy to the agent's network at the address the agent is configured with", () => {
        const attach = find(dev, TYPES.command, `key-proxy-attach-${name}`).inputs;
        const { keyProxy } = agentNetworkAddresses(agent.subnet);
        expect(attach.create).toContain(`docker network connect --ip ${keyProxy} --alias key-proxy openclaw-dev-net-agent-${name} openclaw-dev-key-proxy`);
        expect(attach.delete).toBe(`docker network disconnect --force openclaw-dev-net-agent-${name} openclaw-dev-key-proxy >/dev/null 2>&1 || true`);
        expect(attach.triggers).toEqual(["key-proxy-container-id"]);
        expect(attach.environment).toEqual({ DOCKER_HOST: "unix:///var/run/docker.sock" });
        expect(agentConfigUpload(dev, name).models.providers.anthropic.baseUrl).toBe(`http://${keyProxy}:8080/anthropic`);
    });

    it("registers the digest of the agent's credential, bound to the agent's subnet, never the credential", () => {
        const register = find(dev, TYPES.command, `key-proxy-register-${name}`).inputs;
        expect(register.create).toBe("docker exec -i openclaw-dev-key-proxy /nodejs/bin/node /app/keyproxy.cjs register");
        expect(register.update).toBe(register.create);
        expect(register.delete).toBe(`docker exec openclaw-dev-key-proxy /nodejs/bin/node /app/keyproxy.cjs unregister ${name}`);
        expect(isSecret(register.stdin)).toBe(true);
        const credential: string = agentConfigUpload(dev, name).models.providers.anthropic.apiKey;
        expect(JSON.parse(reveal(register.stdin))).toEqual({
            name,
            credentialSha256: createHash("sha256").update(credential).digest("hex"),
            subnet: agent.subnet,
            budget: agent.budget,
        });
        expect(reveal(register.stdin)).not.toContain(credential);
    });
});

describe("budgets", () => {
    it("reach KeyProxy through the agent's registration: changing one changes only that command", async () => {
        const raw = devConfig();
        (raw.agents as any[])[1].budget = { dailyUsd: 3 };
        const changedRun = await runProgram(raw);
        const key = (r: RecordedResource) => `${r.type}::${r.name}`;
        const before = new Map(dev.map((r) => [key(r), JSON.stringify(reveal(r.inputs))]));
        expect(changedRun.filter((r) => before.get(key(r)) !== JSON.stringify(reveal(r.inputs))).map(key)).toEqual([`${TYPES.command}::key-proxy-register-lisa`]);
        expect(JSON.parse(reveal(find(changedRun, TYPES.command, "key-proxy-register-lisa").inputs.stdin)).budget).toEqual({ dailyUsd: 3 });
    });

    it("are metered in the configured time zone, with price overrides passed to the proxy", () => {
        const config = parseStackConfig({ ...devConfig(), keyProxy: { budgetTimeZone: "Europe/Berlin", prices: { "my-model": { input: 1, output: 2, cacheWrite: 1, cacheWrite1h: 2, cacheRead: 0.1 } } } });
        expect(keyProxyRuntimeConfig(config.keyProxy).metering).toEqual({
            ledgerFile: "/var/lib/keyproxy/ledger.log",
            timeZone: "Europe/Berlin",
            defaultMaxOutputTokens: 32_000,
            leaseUsd: 0.25,
            prices: { "my-model": { input: 1, output: 2, cacheWrite: 1, cacheWrite1h: 2, cacheRead: 0.1 } },
        });
    });

    it.each([[0, 0], [1.5, 1.5]])("hand the stack's budget lease (%d USD) to the proxy", (lease, expected) => {
        const config = parseStackConfig({ ...devConfig(), keyProxy: { budgetLeaseUsd: lease } });
        expect(keyProxyRuntimeConfig(config.keyProxy).metering.leaseUsd).toBe(expected);
    });

    it.each([
        [-0.01, /keyProxy\.budgetLeaseUsd: must be at least 0, not -0\.01/],
        [101, /keyProxy\.budgetLeaseUsd: must be at most 100, not 101/],
    ])("refuse a budget lease of %d USD, naming the key and the bound", (lease, message) => {
        expect(() => parseStackConfig({ ...devConfig(), keyProxy: { budgetLeaseUsd: lease } })).toThrow(message);
    });
});

describe("upstream key rotation", () => {
    it("a new key and epoch change the KeyProxy container and nothing else", async () => {
        const raw = { ...devConfig(), anthropicApiKey: fakeKey("anthropic", `${"ROTATED".repeat(4)}-test`), keyProxy: { providers: { anthropic: { keyEpoch: 2 }, openai: {} } } };
        const rotated = await runProgram(raw);
        const key = (r: RecordedResource) => `${r.type}::${r.name}`;
        const before = new Map(dev.map((r) => [key(r), JSON.stringify(reveal(r.inputs))]));
        const changed = rotated.filter((r) => before.get(key(r)) !== JSON.stringify(reveal(r.inputs))).map(key);
        expect(changed).toEqual([`${TYPES.container}::key-proxy-container`]);
        const labels = find(rotated, TYPES.container, "key-proxy-container").inputs.labels;
        expect(labels).toContainEqual({ label: "openclaw.key-epoch.anthropic", value: "2" });
    });
});

it("declares exactly one KeyProxy component", () => {
    expect(byType(dev, "openclaw:index:KeyProxy").map((r) => r.name)).toEqual(["key-proxy"]);
});
