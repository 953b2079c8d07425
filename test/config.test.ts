import { describe, expect, it } from "vitest";
import { canonicalHost } from "../runtime/hostnames";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { CROSS_FIELD_CHECKS, ConfigError, type ConfigIssue, closest, configFields, enabledProviders, parseEgressRule, parseStackConfig, rawConfigFromPulumi, requiredSecretKeys, TLS_KEY_NOT_READ } from "../infra/config";
import { OPENCLAW_IMAGE, OPENCLAW_VERSION } from "../infra/openclaw";
import { isPinnedImage } from "../infra/securityRules";
import { readStackFile } from "../scripts/stackFile";
import { fakeKey } from "./support/fakeKeys";
import { REPO_ROOT, devConfig } from "./support/mockStack";
import { tempDir } from "./support/tempDirs";
import { operatorPki } from "./support/tls";

type Raw = Record<string, any>;
const agent = (name: string, dashboardPort: number, extra: Raw = {}): Raw => ({
    name,
    image: "ghcr.io/openclaw/openclaw:2026.11.1",
    dashboardPort,
    budget: { dailyUsd: 1 },
    ...extra,
});
const base = (): Raw => ({ ...devConfig(), agents: [agent("bart", 18801), agent("lisa", 18802)] });
const withAgents = (...agents: Raw[]): Raw => ({ ...base(), agents });

const monitoring = (extra: Raw = {}): Raw => ({
    host: "ssh://ops@monitor.example.net",
    publishAddress: "203.0.113.7",
    scrape: { address: "agents.example.net", publishAddress: "198.51.100.4" },
    ...extra,
});

function problemsOf(raw: Raw): string[] {
    try {
        parseStackConfig(raw);
    } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return (error as ConfigError).problems;
    }
    throw new Error("config was accepted");
}

describe("parseStackConfig accepts", () => {
    it("the committed dev stack (with its secrets set) and resolves a subnet per agent", () => {
        const config = parseStackConfig(devConfig());
        expect(config.agents.map((a) => a.name)).toEqual(["bart", "lisa"]);
        for (const a of config.agents) expect(a.subnet).toMatch(/^10\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d+\.\d+\/28$/);
        expect(config.network.publishAddress).toBe("127.0.0.1");
        expect(config.agents[0].egress.allow).toContainEqual({ host: "*.githubusercontent.com" });
        expect(config.agents[0].resources).toEqual({ memoryMb: 2048, cpus: 1, pids: 512 });
    });

    it("an agent without an image, which runs the pinned OpenClaw release; chat completions off unless asked; a named runtime", () => {
        const [bart, lisa] = parseStackConfig(withAgents({ name: "bart", dashboardPort: 18801, budget: { dailyUsd: 1 } }, agent("lisa", 18802, { runtime: "runsc", chatCompletionsApi: true }))).agents;
        expect(bart).toMatchObject({ image: OPENCLAW_IMAGE, chatCompletionsApi: false });
        expect(bart.runtime).toBeUndefined();
        expect(lisa).toMatchObject({ image: "ghcr.io/openclaw/openclaw:2026.11.1", runtime: "runsc", chatCompletionsApi: true });
    });

    it("only the secrets of enabled providers", () => {
        const raw = withAgents(agent("bart", 18801));
        delete raw.openaiApiKey;
        raw.keyProxy = { providers: { anthropic: {} } };
        expect(enabledProviders(parseStackConfig(raw).keyProxy).map((p) => p.id)).toEqual(["anthropic"]);
    });
});

describe.each<[string, () => Raw, string, RegExp]>([
    ["duplicate agent names", () => withAgents(agent("bart", 18801), agent("bart", 18802)), "openclaw:agents[1].name", /duplicate agent name 'bart' \(also agents\[0\]\)/],
    ["a name with capitals", () => withAgents(agent("Bart", 18801)), "openclaw:agents[0].name", /must be a DNS label/],
    ["a name with an underscore", () => withAgents(agent("bart_2", 18801)), "openclaw:agents[0].name", /must be a DNS label/],
    ["a name that ends in '-'", () => withAgents(agent("bart-", 18801)), "openclaw:agents[0].name", /must be a DNS label/],
    ["a name over 32 characters", () => withAgents(agent("a".repeat(33), 18801)), "openclaw:agents[0].name", /must be a DNS label/],
    ["colliding dashboard ports", () => withAgents(agent("bart", 18801), agent("lisa", 18801)), "openclaw:agents[1].dashboardPort", /host port 18801 is already used by agents\[0\] \(bart\)/],
    ["a privileged host port", () => withAgents(agent("bart", 80)), "openclaw:agents[0].dashboardPort", /1024 or above/],
    ["a pool too small", () => ({ ...base(), network: { addressPool: "10.9.0.0/28" } }), "openclaw:network.addressPool", /holds 1 \/28 subnets, too few for 2 agents/],
    ["a pool inside Docker's defaults", () => ({ ...base(), network: { addressPool: "172.20.0.0/16" } }), "openclaw:network.addressPool", /overlaps Docker's default address pool 172\.20\.0\.0\/16/],
    ["a public pool", () => ({ ...base(), network: { addressPool: "8.8.0.0/16" } }), "openclaw:network.addressPool", /must lie inside/],
    ["a malformed pool", () => ({ ...base(), network: { addressPool: "10.0.0.0" } }), "openclaw:network.addressPool", /not an IPv4 CIDR/],
    ["a missing Anthropic key", () => ({ ...base(), anthropicApiKey: undefined }), "openclaw:anthropicApiKey", /missing secret.*pulumi config set --secret anthropicApiKey/],
    ["a missing OpenAI key", () => ({ ...base(), openaiApiKey: undefined }), "openclaw:openaiApiKey", /missing secret/],
    ["an unknown top-level key", () => ({ ...base(), agentz: [] }), "openclaw:agentz:", /^openclaw:agentz: unknown key; did you mean 'agents'\?$/],
    ["a top-level key in the wrong case", () => ({ ...base(), DockerHost: "unix:///var/run/docker.sock" }), "openclaw:DockerHost:", /unknown key; did you mean 'dockerHost'\?$/],
    ["an unknown key nothing is near", () => ({ ...base(), colour: "blue" }), "openclaw:colour:", /unknown key; remove it \(known here: dockerHost, network, agents, /],
    ["an unknown agent key", () => withAgents(agent("bart", 18801, { privileged: true })), "openclaw:agents[0].privileged:", /unknown key; remove it \(known here: name, image, dashboardPort, /],
    ["an unknown resources key", () => withAgents(agent("bart", 18801, { resources: { memory: 1 } })), "openclaw:agents[0].resources.memory:", /unknown key; did you mean 'memoryMb'\?/],
    ["a misspelt keyProxy key", () => ({ ...base(), keyProxy: { budgetTimezone: "UTC" } }), "openclaw:keyProxy.budgetTimezone:", /did you mean 'budgetTimeZone'\?/],
    ["a memory size with a unit", () => withAgents(agent("bart", 18801, { resources: { memoryMb: "2GB" } })), "openclaw:agents[0].resources.memoryMb:", /must be a number, not the string '2GB': write the number alone, without quotes or a unit \(memoryMb is in MiB\)/],
    ["a budget in quotes with a dollar sign", () => withAgents(agent("bart", 18801, { budget: { dailyUsd: "$5" } })), "openclaw:agents[0].budget.dailyUsd:", /must be a number, not the string '\$5'.*\(dailyUsd is in US dollars\)/],
    ["agents given as a map", () => ({ ...base(), agents: { bart: {} } }), "openclaw:agents:", /must be an array, not a map/],
    ["an empty Anthropic key", () => ({ ...base(), anthropicApiKey: "" }), "openclaw:anthropicApiKey:", /is empty: set the real key with `pulumi config set --secret anthropicApiKey`/],
    ["no agents", () => withAgents(), "openclaw:agents", /at least one agent/],
    ["an empty image", () => withAgents(agent("bart", 18801, { image: "" })), "openclaw:agents[0].image", /must not be empty/],
    ["a runtime given as a path", () => withAgents(agent("bart", 18801, { runtime: "/usr/bin/runc" })), "openclaw:agents[0].runtime", /name of a runtime registered with the Docker engine/],
    ["a runtime with options", () => withAgents(agent("bart", 18801, { runtime: "runsc --network=host" })), "openclaw:agents[0].runtime", /name of a runtime/],
    ["a chat-completions switch that is not a boolean", () => withAgents(agent("bart", 18801, { chatCompletionsApi: "yes" })), "openclaw:agents[0].chatCompletionsApi", /boolean/i],
    ["an image on latest", () => withAgents(agent("bart", 18801, { image: "openclaw/openclaw:latest" })), "openclaw:agents[0].image", /must be pinned/],
    ["an untagged image", () => withAgents(agent("bart", 18801, { image: "openclaw/openclaw" })), "openclaw:agents[0].image", /must be pinned/],
    ["a budget with no window", () => withAgents(agent("bart", 18801, { budget: {} })), "openclaw:agents[0].budget", /at least one of dailyUsd/],
    ["a negative budget", () => withAgents(agent("bart", 18801, { budget: { dailyUsd: -1 } })), "openclaw:agents[0].budget.dailyUsd", /must be more than 0, not -1$/],
    ["an egress rule with a path", () => withAgents(agent("bart", 18801, { egress: { allow: ["github.com/x"] } })), "openclaw:agents[0].egress.allow[0]", /not a host name/],
    ["an egress rule with a bad port", () => withAgents(agent("bart", 18801, { egress: { allow: ["github.com:70000"] } })), "openclaw:agents[0].egress.allow[0]", /ports must be 1-65535/],
    ["an egress rule that is an IP", () => withAgents(agent("bart", 18801, { egress: { allow: ["10.0.0.1"] } })), "openclaw:agents[0].egress.allow[0]", /not a host name/],
    ["an egress mode that does not exist", () => withAgents(agent("bart", 18801, { egress: { mode: "allow-all" } })), "openclaw:agents[0].egress.mode", /must be one of enforce, report, not the string 'allow-all'/],
    ["a model of a disabled provider", () => ({ ...withAgents(agent("bart", 18801, { model: "openai/gpt-5" })), keyProxy: { providers: { anthropic: {} } } }), "openclaw:agents[0].model", /provider 'openai' is not enabled/],
    ["a plain-http upstream", () => ({ ...base(), keyProxy: { providers: { anthropic: { baseUrl: "http://api.anthropic.com" } } } }), "openclaw:keyProxy.providers.anthropic.baseUrl", /https:\/\//],
    ["a pinned subnet outside the pool", () => withAgents(agent("bart", 18801, { subnet: "10.200.0.0/28" })), "openclaw:agents[0].subnet", /outside the pool/],
    ["two agents pinned to one subnet", () => withAgents(agent("bart", 18801, { subnet: "10.64.0.0/28" }), agent("lisa", 18802, { subnet: "10.64.0.0/28" })), "openclaw:agents[1].subnet", /collides with agent 'bart'/],
    ["a time zone that does not exist", () => ({ ...base(), keyProxy: { budgetTimeZone: "Mars/Olympus" } }), "openclaw:keyProxy.budgetTimeZone", /IANA time zone/],
    ["a price with a missing field", () => ({ ...base(), keyProxy: { prices: { m: { input: 1, output: 2 } } } }), "openclaw:keyProxy.prices.m.cacheWrite", /required/],
    ["a monitoring host that is not ssh", () => ({ ...base(), monitoring: { host: "tcp://mon:2376" } }), "openclaw:monitoring.host", /ssh:\/\/user@host/],
    ["a publish address that is not an address", () => ({ ...base(), network: { publishAddress: "localhost" } }), "openclaw:network.publishAddress", /IPv4 address/],
    ["an uplink subnet inside the agents' pool", () => ({ ...base(), network: { uplinkSubnet: "10.64.0.0/24" } }), "openclaw:network.uplinkSubnet", /overlaps the agents' pool/],
    ["an uplink subnet inside Docker's defaults", () => ({ ...base(), network: { uplinkSubnet: "172.17.5.0/24" } }), "openclaw:network.uplinkSubnet", /Docker's default address pool/],
    ["a public uplink subnet", () => ({ ...base(), network: { uplinkSubnet: "8.8.8.0/24" } }), "openclaw:network.uplinkSubnet", /must lie inside/],
    ["an uplink subnet too small", () => ({ ...base(), network: { uplinkSubnet: "10.63.0.0/30" } }), "openclaw:network.uplinkSubnet", /between \/16 and \/29/],
    ["monitoring published on every address", () => ({ ...base(), monitoring: monitoring({ publishAddress: "0.0.0.0" }) }), "openclaw:monitoring.publishAddress", /must be one address/],
    ["monitoring without its scrape settings", () => ({ ...base(), monitoring: monitoring({ scrape: undefined }) }), "openclaw:monitoring.scrape", /required/],
    ["a scrape address that is a URL", () => ({ ...base(), monitoring: monitoring({ scrape: { address: "https://agents.example.net", publishAddress: "198.51.100.4" } }) }), "openclaw:monitoring.scrape.address", /DNS name or an IPv4/],
    ["Grafana and Uptime Kuma on one port", () => ({ ...base(), monitoring: monitoring({ ports: { grafana: 3000, uptimeKuma: 3000 } }) }), "openclaw:monitoring.ports.uptimeKuma", /already Grafana's/],
    ["Grafana on the SSH port", () => ({ ...base(), monitoring: monitoring({ host: "ssh://ops@monitor.example.net:2222", ports: { grafana: 2222 } }) }), "openclaw:monitoring.ports.grafana", /SSH port/],
    ["a scrape port an agent's dashboard uses", () => ({ ...base(), monitoring: monitoring({ scrape: { address: "agents.example.net", publishAddress: "198.51.100.4", ports: { keyProxy: 18801 } } }) }), "openclaw:monitoring.scrape.ports.keyProxy", /already used by agents\[0\] \(bart\)/],
    ["a retention of zero days", () => ({ ...base(), monitoring: monitoring({ retentionDays: 0 }) }), "openclaw:monitoring.retentionDays", /must be at least 1, not 0$/],
    ["a monitoring image on latest", () => ({ ...base(), monitoring: monitoring({ images: { grafana: "grafana/grafana:latest" } }) }), "openclaw:monitoring.images.grafana", /must be pinned/],
    ["a hardening exception without a reason", () => ({ ...base(), monitoring: monitoring({ hardeningExceptions: { grafana: { "container-read-only": "" } } }) }), "openclaw:monitoring.hardeningExceptions.grafana.container-read-only", /give the reason/],
    ["a hardening exception for a policy that cannot be relaxed", () => ({ ...base(), monitoring: monitoring({ hardeningExceptions: { grafana: { "container-non-root": "the image wants root" } } }) }), "openclaw:monitoring.hardeningExceptions.grafana.container-non-root:", /unknown key; remove it \(known here: container-read-only\)/],
])("parseStackConfig rejects %s", (_case, raw, key, message) => {
    it(`naming ${key}`, () => {
        const problems = problemsOf(raw());
        const problem = problems.find((p) => p.startsWith(key));
        expect(problem, problems.join("\n")).toBeDefined();
        expect(problem).toMatch(message);
    });
});

describe.each<[keyof typeof CROSS_FIELD_CHECKS, [string, () => Raw, ConfigIssue[]][]]>([
    [
        "networkBlocks",
        [
            ["the defaults", base, []],
            ["a pool inside Docker's defaults", () => ({ ...base(), network: { addressPool: "172.20.0.0/16" } }), [{ path: ["network", "addressPool"], message: "172.20.0.0/16 overlaps Docker's default address pool 172.20.0.0/16" }]],
            ["a public pool", () => ({ ...base(), network: { addressPool: "8.8.0.0/16" } }), [{ path: ["network", "addressPool"], message: "8.8.0.0/16 must lie inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10" }]],
            ["an uplink too small", () => ({ ...base(), network: { uplinkSubnet: "10.63.0.0/30" } }), [{ path: ["network", "uplinkSubnet"], message: "10.63.0.0/30 must be between /16 and /29" }]],
            ["an uplink in the pool", () => ({ ...base(), network: { uplinkSubnet: "10.64.0.0/24" } }), [{ path: ["network", "uplinkSubnet"], message: "10.64.0.0/24 overlaps the agents' pool 10.64.0.0/10" }]],
            [
                "a bad pool and a bad uplink: both, and no overlap claimed",
                () => ({ ...base(), network: { addressPool: "8.8.0.0/16", uplinkSubnet: "8.8.0.0/24" } }),
                [
                    { path: ["network", "addressPool"], message: "8.8.0.0/16 must lie inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10" },
                    { path: ["network", "uplinkSubnet"], message: "8.8.0.0/24 must lie inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10" },
                ],
            ],
        ],
    ],
    [
        "uniqueAgentNames",
        [
            ["distinct names", base, []],
            ["bart twice, then lisa twice", () => withAgents(agent("bart", 18801), agent("lisa", 18802), agent("bart", 18803), agent("lisa", 18804)), [
                { path: ["agents", 2, "name"], message: "duplicate agent name 'bart' (also agents[0])" },
                { path: ["agents", 3, "name"], message: "duplicate agent name 'lisa' (also agents[1])" },
            ]],
        ],
    ],
    [
        "uniqueDashboardPorts",
        [
            ["distinct ports", base, []],
            ["three agents on one port: the first holds it", () => withAgents(agent("bart", 18801), agent("lisa", 18801), agent("homer", 18801)), [
                { path: ["agents", 1, "dashboardPort"], message: "host port 18801 is already used by agents[0] (bart)" },
                { path: ["agents", 2, "dashboardPort"], message: "host port 18801 is already used by agents[0] (bart)" },
            ]],
        ],
    ],
    [
        "agentSkills",
        [
            ["no skills", base, []],
            ["a skill folder", () => withAgents(agent("bart", 18801, { skills: ["test/fixtures/skills/benign"] })), []],
            ["a missing folder", () => withAgents(agent("bart", 18801, { skills: ["test/fixtures/skills/absent"] })), [{ path: ["agents", 0, "skills", 0], message: `no skill folder at ${path.join(REPO_ROOT, "test/fixtures/skills/absent")}` }]],
            ["a file, not a folder", () => withAgents(agent("bart", 18801, { skills: ["test/fixtures/skills/malicious.json"] })), [{ path: ["agents", 0, "skills", 0], message: `${path.join(REPO_ROOT, "test/fixtures/skills/malicious.json")} is not a directory` }]],
            ["one folder twice", () => withAgents(agent("bart", 18801, { skills: ["test/fixtures/skills/benign", "test/fixtures/skills/../skills/benign"] })), [
                { path: ["agents", 0, "skills", 1], message: "skill name 'benign' is already skills[0] (skills are delivered by folder name)" },
            ]],
        ],
    ],
    [
        "agentProvidersEnabled",
        [
            ["models of enabled providers", base, []],
            ["a model of a disabled provider", () => ({ ...withAgents(agent("bart", 18801, { model: "openai/gpt-5" })), keyProxy: { providers: { anthropic: {} } } }), [{ path: ["agents", 0, "model"], message: "provider 'openai' is not enabled in keyProxy.providers" }]],
        ],
    ],
    [
        "kubernetesBackend",
        [
            ["docker, with a dashboard on a service port", () => withAgents(agent("bart", 8080)), []],
            ["kubernetes with the defaults", () => ({ ...base(), backend: "kubernetes" }), []],
            ["kubernetes with a monitoring VPS", () => ({ ...base(), backend: "kubernetes", monitoring: monitoring() }), [
                { path: ["monitoring"], message: "the monitoring VPS scrapes ports published on a Docker host; on kubernetes set kubernetes.monitoringNamespace instead" },
            ]],
            ["kubernetes with an Ingress", () => ({ ...base(), backend: "kubernetes", ingress: {} }), [
                { path: ["ingress"], message: "the Ingress is deployed on the docker backend only so far: remove it, or deploy on docker" },
            ]],
            ["kubernetes, an agent on a service port, with a bad runtime and skills", () => ({ ...withAgents(agent("bart", 3128, { runtime: "run_sc", skills: ["test/fixtures/skills/benign"] })), backend: "kubernetes" }), [
                { path: ["agents", 0, "dashboardPort"], message: "port 3128 is one KeyProxy or EgressGateway listens on itself; on kubernetes it is also the agent's port on them" },
                { path: ["agents", 0, "runtime"], message: "on kubernetes this names a RuntimeClass: a DNS subdomain (lowercase letters, digits, '-' and '.')" },
                { path: ["agents", 0, "skills"], message: "approved skills are delivered on the docker backend only so far: remove them, or deploy this agent on docker" },
            ]],
        ],
    ],
    [
        "monitoringPorts",
        [
            ["no monitoring", base, []],
            ["the defaults", () => ({ ...base(), monitoring: monitoring() }), []],
            ["every clash", () => ({ ...base(), monitoring: monitoring({ host: "ssh://ops@monitor.example.net:3000", ports: { grafana: 3000, uptimeKuma: 3000 }, scrape: { address: "agents.example.net", publishAddress: "198.51.100.4", ports: { keyProxy: 18801, egressGateway: 18801 } } }) }), [
                { path: ["monitoring", "ports", "uptimeKuma"], message: "host port 3000 is already Grafana's" },
                { path: ["monitoring", "ports", "grafana"], message: "host port 3000 is the monitoring host's SSH port" },
                { path: ["monitoring", "ports", "uptimeKuma"], message: "host port 3000 is the monitoring host's SSH port" },
                { path: ["monitoring", "scrape", "ports", "egressGateway"], message: "host port 18801 is already KeyProxy's" },
                { path: ["monitoring", "scrape", "ports", "keyProxy"], message: "host port 18801 is already used by agents[0] (bart)" },
                { path: ["monitoring", "scrape", "ports", "egressGateway"], message: "host port 18801 is already used by agents[0] (bart)" },
            ]],
        ],
    ],
    [
        "ingressUsersPortAndRules",
        [
            ["no Ingress", base, []],
            ["users of existing agents, the default rules", () => ({ ...base(), ingress: { users: [{ name: "ann", agents: ["bart"] }, { name: "ned", agents: ["bart", "lisa"] }] } }), []],
            ["a duplicate user reaching an unknown agent", () => ({ ...base(), ingress: { users: [{ name: "ann", agents: ["bart"] }, { name: "ann", agents: ["lisa", "homer"] }] } }), [
                { path: ["ingress", "users", 1, "name"], message: "duplicate user name 'ann' (also ingress.users[0])" },
                { path: ["ingress", "users", 1, "agents", 1], message: "no agent named 'homer' in agents" },
            ]],
            ["the port of an agent's dashboard", () => ({ ...base(), ingress: { port: 18802 } }), [{ path: ["ingress", "port"], message: "host port 18802 is already used by agents[1] (lisa)" }]],
            ["the port of a metrics endpoint", () => ({ ...base(), monitoring: monitoring(), ingress: { port: 9465 } }), [{ path: ["ingress", "port"], message: "host port 9465 is already used by monitoring.scrape.ports.egressGateway" }]],
            ["a rule RE2 cannot run, and a duplicate id", () => ({ ...base(), ingress: { rules: [{ id: "r", pattern: "(?=a)b", action: "reject" }, { id: "r", pattern: "b", action: "strip" }] } }), [
                { path: ["ingress", "rules", 0, "pattern"], message: expect.stringMatching(/^'r': pattern refused: .*\(RE2 syntax: no backreferences or lookaround\)$/) },
                { path: ["ingress", "rules", 1, "id"], message: "duplicate rule id 'r' (also ingress.rules[0])" },
            ]],
        ],
    ],
    [
        "subnetAllocation",
        [
            ["the defaults", base, []],
            ["a pool too small", () => ({ ...base(), network: { addressPool: "10.9.0.0/28" } }), [{ path: ["network", "addressPool"], message: "pool 10.9.0.0/28 holds 1 /28 subnets, too few for 2 agents" }]],
            ["a bad pool: networkBlocks' issue", () => ({ ...base(), network: { addressPool: "8.8.0.0/16" } }), []],
            ["duplicate names: uniqueAgentNames' issue", () => withAgents(agent("bart", 18801, { subnet: "10.64.0.0/28" }), agent("bart", 18802, { subnet: "10.64.0.0/28" })), []],
            ["two agents pinned to one subnet", () => withAgents(agent("bart", 18801, { subnet: "10.64.0.0/28" }), agent("lisa", 18802, { subnet: "10.64.0.0/28" })), [
                { path: ["agents", 1, "subnet"], message: expect.stringMatching(/collides with agent 'bart'/) },
            ]],
        ],
    ],
])("the cross-field check %s", (check, cases) => {
    // The provider secrets are checked apart from the fields (secretProblems), so the checks see a config without them.
    const fields = (raw: Raw) => configFields.parse(Object.fromEntries(Object.entries(raw).filter(([key]) => !key.endsWith("ApiKey"))));
    it.each(cases)("%s", (_case, raw, issues) => expect(CROSS_FIELD_CHECKS[check](fields(raw()))).toEqual(issues));
});

describe("egress rules", () => {
    it.each<[string, ReturnType<typeof parseEgressRule>]>([
        ["GitHub.com.", { host: "github.com" }],
        ["*.NPMJS.org:443,80,443", { host: "*.npmjs.org", ports: [80, 443] }],
        ["bücher.example", { host: "xn--bcher-kva.example" }],
        ["*.*.example.com", "'*.*.example.com' is not a host name or *.suffix glob"],
        ["exa mple.com", "must be host, *.suffix, or either with :port[,port]"],
        ["user@example.com", "'user@example.com' is not a host name or *.suffix glob"],
        ["0x7f.1", "'0x7f.1' is not a host name or *.suffix glob"],
        ["github.com/x", "'github.com/x' is not a host name or *.suffix glob"],
    ])("%s", (input, expected) => expect(parseEgressRule(input)).toEqual(expected));

    it("canonicalises the way the gateway must", () => {
        expect(canonicalHost("API.Example.COM.")).toBe("api.example.com");
        expect(canonicalHost("localhost")).toBeUndefined();
        expect(canonicalHost("-bad.example")).toBeUndefined();
    });
});

describe("images", () => {
    it.each([
        ["ghcr.io/openclaw/openclaw:2026.11.1", true],
        ["localhost:5000/openclaw", false],
        ["localhost:5000/openclaw:1.2", true],
        [`openclaw@sha256:${"a".repeat(64)}`, true],
        ["openclaw:latest", false],
    ])("%s pinned: %s", (reference, pinned) => expect(isPinnedImage(reference)).toBe(pinned));

    it("the default agent image is the OpenClaw release the project tests, pinned by digest", () => {
        const match = /^ghcr\.io\/openclaw\/openclaw:([^@]+)@sha256:[0-9a-f]{64}$/.exec(OPENCLAW_IMAGE);
        expect(match?.[1]).toBe(OPENCLAW_VERSION);
        expect(isPinnedImage(OPENCLAW_IMAGE)).toBe(true);
    });
});

describe("parseStackConfig names the stack file", () => {
    it("in its error's first line", () => {
        expect(() => parseStackConfig({ ...base(), agentz: [] }, "Pulumi.dev.yaml")).toThrow(/^invalid config in Pulumi\.dev\.yaml:\n {2}- openclaw:agentz: unknown key/);
    });
});

describe("config keys outside the openclaw namespace", () => {
    it.each<[string, RegExp]>([
        ["opencalw:agents", /^opencalw:agents: unknown namespace 'opencalw'; did you mean openclaw:agents\?$/],
        ["opencalw:dockerHost", /^opencalw:dockerHost: unknown namespace 'opencalw'; did you mean openclaw:dockerHost\?$/],
        ["OpenClaw:agents", /did you mean openclaw:agents\?$/],
        ["acme:agents", /^acme:agents: unknown namespace 'acme'; this program reads openclaw:, pulumi:, docker:, command:, random:, tls: keys: rename or remove it$/],
        ["agents", /^agents: no namespace; write openclaw:agents$/],
    ])("%s is an error", (key, message) => {
        try {
            rawConfigFromPulumi({ ...flat(), [key]: "[]" }, "Pulumi.dev.yaml");
            throw new Error("accepted");
        } catch (error) {
            expect(error).toBeInstanceOf(ConfigError);
            expect((error as ConfigError).file).toBe("Pulumi.dev.yaml");
            expect((error as ConfigError).problems).toEqual([expect.stringMatching(message)]);
        }
    });

    it.each(["docker:host", "pulumi:tags", "command:x", "random:x", "tls:x"])("%s is Pulumi's or a provider's, and left alone", (key) => {
        expect(rawConfigFromPulumi({ ...flat(), [key]: "x" })).not.toHaveProperty(key);
    });

    const flat = () => ({ "openclaw:dockerHost": "unix:///var/run/docker.sock" });
});

describe("closest", () => {
    it.each<[string, string[], string | undefined]>([
        ["agentz", ["agents", "network"], "agents"],
        ["opencalw", ["openclaw"], "openclaw"],
        ["netwrok", ["network"], "network"],
        ["memory", ["memoryMb", "cpus", "pids"], "memoryMb"],
        ["colour", ["agents", "network", "egress"], undefined],
        ["x", ["cpus"], undefined],
    ])("%s among %j: %s", (word, candidates, expected) => expect(closest(word, candidates)).toBe(expected));
});

describe("stack files (readStackFile)", () => {
    const dev = readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");
    const anthropicKey = fakeKey("anthropic", "Q".repeat(40));
    const openaiKey = fakeKey("openai", "Q".repeat(40));
    const plainKey = ["sk", "Q".repeat(40)].join("-");
    const pemKey = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";

    function problemsOfFile(text: string): { file?: string; problems: string[]; message: string } {
        const dir = tempDir("stack-file");
        writeFileSync(path.join(dir, "Pulumi.pr.yaml"), text);
        try {
            readStackFile("pr", dir);
        } catch (error) {
            expect(error).toBeInstanceOf(ConfigError);
            const { file, problems, message } = error as ConfigError;
            return { file, problems, message };
        }
        throw new Error("stack file accepted");
    }

    it.each<[string, string, RegExp]>([
        ["broken YAML", dev.replace("    - name: lisa", "    - name: lisa\n   image: [x"), /^not valid YAML: .* at line \d+, column \d+; fix the syntax there$/],
        ["a misspelt namespace", `${dev}  opencalw:dockerHost: tcp://127.0.0.1:2375\n`, /^opencalw:dockerHost: unknown namespace 'opencalw'; did you mean openclaw:dockerHost\?$/],
        ["an Anthropic key in plain text", `${dev}  openclaw:anthropicApiKey: ${anthropicKey}\n`, /^openclaw:anthropicApiKey: a provider API key in plain text: remove it from the file, store it with `pulumi config set --secret anthropicApiKey`, and rotate the key/],
        ["an OpenAI project key in plain text", `${dev}  openclaw:openaiApiKey: ${openaiKey}\n`, /^openclaw:openaiApiKey: a provider API key in plain text: .*--secret openaiApiKey/],
        ["a plain sk- key in another setting", dev.replace("model: openai/gpt-5.1", `model: ${plainKey}`), /^openclaw:agents\[1\]\.model: a provider API key in plain text: remove it from the file, keep provider keys only in the secrets anthropicApiKey, openaiApiKey and geminiApiKey/],
        ["a key under another namespace", `${dev}  docker:apiKey: ${anthropicKey}\n`, /^docker:apiKey: a provider API key in plain text/],
        ["the Ingress's TLS key in plain text", `${dev}  openclaw:ingressTlsKeyPem: "${pemKey.replace(/\n/g, "\\n")}"\n`, /^openclaw:ingressTlsKeyPem: a private key in plain text: remove it from the file, store it with `npm run pulumi -- config set --secret ingressTlsKeyPem < key.pem`/],
    ])("%s: names the file, the key and the fix", (_case, text, message) => {
        const { file, problems, message: whole } = problemsOfFile(text);
        expect(file).toMatch(/Pulumi\.pr\.yaml$/);
        expect(whole).toMatch(/^invalid config in .*Pulumi\.pr\.yaml:\n/);
        expect(problems).toEqual([expect.stringMatching(message)]);
        for (const key of [anthropicKey, openaiKey, plainKey, "MIGHAgEAMBMGByqGSM49"]) expect(whole).not.toContain(key);
    });

    it("accepts keys stored encrypted, and reports them as present", () => {
        const dir = tempDir("stack-file");
        writeFileSync(path.join(dir, "Pulumi.pr.yaml"), `${dev}  openclaw:anthropicApiKey:\n    secure: v1:abc:def\n  docker:host: unix:///var/run/docker.sock\n`);
        const file = readStackFile("pr", dir);
        expect(file.encrypted).toEqual(["anthropicApiKey"]);
        expect(file.raw).not.toHaveProperty("anthropicApiKey");
    });
});

describe("rawConfigFromPulumi", () => {
    it("decodes structured values, keeps secrets and host URLs as strings, ignores other namespaces", () => {
        expect(
            rawConfigFromPulumi({
                "openclaw:agents": '[{"name":"bart"}]',
                "openclaw:anthropicApiKey": "12345",
                "openclaw:dockerHost": "unix:///var/run/docker.sock",
                "docker:host": "x",
            }),
        ).toEqual({ agents: [{ name: "bart" }], anthropicApiKey: "12345", dockerHost: "unix:///var/run/docker.sock" });
    });

    it("keeps the Ingress's TLS key as the string it is", () => {
        expect(rawConfigFromPulumi({ "openclaw:ingressTlsKeyPem": "123" })).toEqual({ ingressTlsKeyPem: "123" });
    });
});

describe("an operator-supplied Ingress certificate", () => {
    const pki = operatorPki();
    const withCertificate = (certPem: string | undefined, keyPem: string | undefined, ingress: Raw = {}): Raw => ({
        ...base(),
        ingress: { ...ingress, ...(certPem !== undefined && { certificate: { certPem } }) },
        ...(keyPem !== undefined && { ingressTlsKeyPem: keyPem }),
    });
    const keyBody = (pem: string) => pem.split("\n").filter((line) => line && !line.startsWith("-----"));
    const CERT = "openclaw:ingress.certificate.certPem";
    const KEY = "openclaw:ingressTlsKeyPem";

    it.each<[string, () => Raw]>([
        ["a chain covering the publish address", () => withCertificate(pki.chain, pki.key)],
        ["a chain covering only one of ingress.hostnames", () => withCertificate(pki.hostOnlyChain, pki.key, { hostnames: ["other.example.net", "agents.example.net"] })],
    ])("accepts %s, and hands the component the chain and the key", (_, raw) => {
        const config = parseStackConfig(raw());
        expect(config.ingress!.certificate).toEqual({ certPem: raw().ingress.certificate.certPem, keyPem: pki.key });
    });

    it("offline (review, bridge), an unread key stands in: the chain is still checked, the key at deploy", () => {
        expect(requiredSecretKeys(withCertificate(pki.chain, undefined))).toContain("ingressTlsKeyPem");
        expect(requiredSecretKeys(withCertificate(undefined, undefined))).not.toContain("ingressTlsKeyPem");
        expect(() => parseStackConfig(withCertificate(pki.chain, TLS_KEY_NOT_READ))).not.toThrow();
        expect(problemsOf(withCertificate(pki.expiredChain, TLS_KEY_NOT_READ))).toEqual([expect.stringMatching(/the leaf certificate expired/)]);
    });

    it("without either, the stack's own CA: no certificate in the config", () => {
        expect(parseStackConfig(withCertificate(undefined, undefined)).ingress!.certificate).toBeUndefined();
    });

    describe.each<[string, () => Raw, RegExp[]]>([
        ["an expired leaf", () => withCertificate(pki.expiredChain, pki.key), [new RegExp(`^${CERT}: the leaf certificate expired on 2020-01-02T00:00:00.000Z`)]],
        ["a leaf valid only in the future", () => withCertificate(pki.futureChain, pki.key), [new RegExp(`^${CERT}: the leaf certificate is not valid before 2099-01-01T00:00:00.000Z`)]],
        ["the key of another certificate", () => withCertificate(pki.chain, pki.otherKey), [new RegExp(`^${CERT}: the leaf certificate does not belong to the private key in ${KEY}$`)]],
        ["a leaf covering neither the publish address nor a host name", () => withCertificate(pki.hostOnlyChain, pki.key), [new RegExp(`^${CERT}: the leaf certificate \\(DNS:agents.example.net\\) covers neither network.publishAddress 127.0.0.1 nor any of ingress.hostnames \\(none set\\)`)]],
        ["a leaf for a host name the stack does not use", () => withCertificate(pki.hostOnlyChain, pki.key, { hostnames: ["other.example.net"] }), [/covers neither network.publishAddress 127.0.0.1 nor any of ingress.hostnames \(other.example.net\)/]],
        ["the chain out of order", () => withCertificate(pki.reversedChain, pki.key), [new RegExp(`^${CERT}: certificate 1 of the chain is not issued by certificate 2`), /does not belong to the private key/, /covers neither/]],
        ["the key without a certificate", () => withCertificate(undefined, pki.key), [new RegExp(`^${KEY}: set without ${CERT}`)]],
        ["the key without any ingress", () => ({ ...base(), ingressTlsKeyPem: pki.key }), [new RegExp(`^${KEY}: set without ${CERT}`)]],
        ["a certificate without the key", () => withCertificate(pki.chain, undefined), [new RegExp(`^${CERT}: its private key ${KEY} is not set`)]],
        ["an empty key", () => withCertificate(pki.chain, ""), [new RegExp(`^${KEY}: is empty`)]],
        ["a key that is not a PEM private key", () => withCertificate(pki.chain, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"), [new RegExp(`^${KEY}: is not a readable unencrypted PEM private key$`)]],
        ["garbage instead of PEM", () => withCertificate("not a certificate", pki.key), [new RegExp(`^${CERT}: must be a PEM certificate$`)]],
        ["garbage inside the PEM armour", () => withCertificate(`${pki.chain}-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n`, pki.key), [new RegExp(`^${CERT}: certificate 3 of the chain does not parse as X.509$`)]],
    ])("refuses %s", (_, raw, expected) => {
        it("naming what is wrong", () => {
            expect(problemsOf(raw())).toEqual(expected.map((pattern) => expect.stringMatching(pattern)));
        });

        it("never showing the key", () => {
            const shown = problemsOf(raw()).join("\n");
            for (const line of [...keyBody(pki.key), ...keyBody(pki.otherKey)]) expect(shown).not.toContain(line);
        });
    });
});
