import { X509Certificate, createPrivateKey } from "node:crypto";
import { statSync } from "node:fs";
import path from "node:path";
import ipaddr from "ipaddr.js";
import { z } from "zod";
import { budgetSchema, isTimeZone, priceSchema } from "../contracts/keyProxy";
import { BUILT_IN, OPENAI_COMPATIBLE_KIND, PROVIDER_ID, type Price, secretConfigKey, secretEnv } from "../providers/index";
import { auditRotationSchema } from "../runtime/audit";
import { canonicalHost } from "../runtime/hostnames";
import { AGENT_NAME } from "../runtime/registry";
import { type Block, DOCKER_DEFAULT_POOLS, PRIVATE_RANGES, allocateSubnets, contains, overlaps, parseBlock, slotCount } from "./subnets";
import { SKILL_NAME } from "../scanner/skill";
import { DEFAULT_RULES, ruleSchema, userLimits } from "../contracts/ingress";
import { compileRule } from "../ingress-image/src/rules";
import { OPENCLAW_IMAGE } from "./openclaw";
import { KUBERNETES_RESERVED_PORTS } from "./kubernetesTopology";
import { MAX_AGENT_PREFIX, MIN_AGENT_PREFIX } from "./topology";
import { isPinnedImage, publishesOnEveryAddress } from "./securityRules";

/** The config namespace: Pulumi.yaml's project name. */
export const NAMESPACE = "openclaw";
/** Other namespaces a stack file may use: Pulumi's own and the providers' the program uses. */
export const OTHER_NAMESPACES = ["pulumi", "docker", "command", "random", "tls"] as const;

/** Config keys whose values are plain strings, never JSON (and every secret key, see SECRET_KEY). */
export const STRING_KEYS = ["backend", "dockerHost"] as const;

/** The secret config keys that hold real provider keys: `<provider>ApiKey` (providers/index.ts secretConfigKey). */
export const SECRET_KEY = /^[a-z][A-Za-z0-9]*ApiKey$/;

/** The secret config key holding the private key of an operator-supplied Ingress certificate (ingress.certificate). */
export const INGRESS_TLS_KEY = "ingressTlsKeyPem";

/**
 * What offline tools (review, bridge) put in place of an encrypted ingressTlsKeyPem they cannot read: the chain is
 * checked, the key against it at deploy. Not a key: an Ingress handed it would fail to start.
 */
export const TLS_KEY_NOT_READ = "<ingressTlsKeyPem: encrypted, not read offline>";

/** Every secret config key: provider keys and the Ingress's TLS key. Their values are plain strings, never printed. */
export function isSecretKey(key: string): boolean {
    return SECRET_KEY.test(key) || key === INGRESS_TLS_KEY;
}

/** Where the stack runs: one Docker host, or a Kubernetes cluster (docs/kubernetes.md). */
export const BACKENDS = ["docker", "kubernetes"] as const;


/** The project root: where Pulumi.yaml is, and what relative skill folders are relative to. */
export const PROJECT_ROOT = path.resolve(__dirname, "..");

export function resolveSkillDir(dir: string): string {
    return path.resolve(PROJECT_ROOT, dir);
}

function skillDirProblem(dir: string): string | undefined {
    const full = resolveSkillDir(dir);
    try {
        if (!statSync(full).isDirectory()) return `${full} is not a directory`;
    } catch {
        return `no skill folder at ${full}`;
    }
    const name = path.basename(full);
    return SKILL_NAME.test(name) ? undefined : `folder name '${name}' is not a skill name (lowercase letters, digits, '.', '_', '-')`;
}

const dnsLabel = z
    .string()
    .regex(AGENT_NAME, "must be a DNS label: lowercase letters, digits and '-', starting with a letter, at most 32 characters");

const image = z
    .string()
    .min(1)
    .refine(isPinnedImage, "must be pinned: name:tag with a tag other than 'latest', or name@sha256:<digest>");

const port = z.number().int().min(1).max(65535);
const hostPort = z.number().int().min(1024, "must be 1024 or above (no privileged host ports)").max(65535);
const epoch = z.number().int().min(0);

const ipv4 = z.string().refine((value) => ipaddr.IPv4.isValidFourPartDecimal(value), "must be an IPv4 address");
const singleAddress = ipv4.refine((address) => !publishesOnEveryAddress(address), "must be one address: 0.0.0.0 would publish on every interface");
const pemCertificate = z.string().regex(/-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/, "must be a PEM certificate");
const SSH_HOST = /^ssh:\/\/([^@\s/]+)@([^\s/:]+)(?::(\d+))?$/;

/** The monitoring stack's services. */
export const MONITORING_SERVICES = ["prometheus", "grafana", "uptimeKuma"] as const;
export type MonitoringService = (typeof MONITORING_SERVICES)[number];
/** Hardening policies a monitoring container may declare it cannot meet (the setting is relaxed, the policy reports it). */
export const RELAXABLE_POLICIES = ["container-read-only"] as const;
export type RelaxablePolicy = (typeof RELAXABLE_POLICIES)[number];

/** user, host and port of an ssh://user@host[:port] URL (validated by the schema). */
export function sshTarget(url: string): { user: string; host: string; port: number } {
    const match = SSH_HOST.exec(url);
    if (!match) throw new Error(`${url} is not ssh://user@host[:port]`);
    return { user: match[1], host: match[2], port: match[3] ? Number(match[3]) : 22 };
}

const httpsUrl = z
    .string()
    .url()
    .refine((value) => {
        const url = new URL(value);
        return url.protocol === "https:" && url.username === "" && url.password === "" && url.search === "" && url.hash === "";
    }, "must be an https:// URL without credentials, query or fragment");

export interface EgressRule {
    /** Canonical (lowercase, punycode, no trailing dot) host name; `*.` prefix for a suffix glob. */
    host: string;
    /** Allowed ports; undefined means the egress default ports. */
    ports?: number[];
}

export function parseEgressRule(rule: string): EgressRule | string {
    const match = /^([^:\s]+)(?::(\d+(?:,\d+)*))?$/.exec(rule.trim());
    if (!match) return "must be host, *.suffix, or either with :port[,port]";
    const host = canonicalHost(match[1]);
    if (!host) return `'${match[1]}' is not a host name or *.suffix glob`;
    if (match[2] === undefined) return { host };
    const ports = match[2].split(",").map(Number);
    if (ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) return "ports must be 1-65535";
    return { host, ports: [...new Set(ports)].sort((a, b) => a - b) };
}

/** An agent's rules plus the stack-wide ones, default ports filled in: what EgressGateway enforces for it. */
export function effectiveAllowRules(agentRules: readonly EgressRule[], egress: { defaultPorts: number[]; allowForAll: EgressRule[] }): { host: string; ports: number[] }[] {
    return [...agentRules, ...egress.allowForAll].map((rule) => ({ host: rule.host, ports: rule.ports ?? egress.defaultPorts }));
}

const egressRule = z.string().transform((value, ctx): EgressRule => {
    const parsed = parseEgressRule(value);
    if (typeof parsed === "string") {
        ctx.addIssue({ code: "custom", message: parsed });
        return z.NEVER;
    }
    return parsed;
});

/** The shared services' container limits when the stack sets none (the benchmarks run the services with these too). */
export const SERVICE_RESOURCES = {
    keyProxy: { memoryMb: 512, cpus: 1, pids: 256 },
    ingress: { memoryMb: 256, cpus: 0.5, pids: 256 },
    egressGateway: { memoryMb: 256, cpus: 0.5, pids: 256 },
} as const;

const resources = (defaults: { memoryMb: number; cpus: number; pids: number }) =>
    z
        .strictObject({
            memoryMb: z.number().int().min(64).max(262144).default(defaults.memoryMb),
            cpus: z.number().min(0.05).max(256).default(defaults.cpus),
            pids: z.number().int().min(16).max(65536).default(defaults.pids),
        })
        .prefault({});

const budget = budgetSchema.refine((b) => b.dailyUsd !== undefined || b.monthlyUsd !== undefined || b.totalUsd !== undefined, {
        message: "set at least one of dailyUsd, monthlyUsd, totalUsd",
    });

const agent = z.strictObject({
    name: dnsLabel,
    image: image.default(OPENCLAW_IMAGE),
    dashboardPort: hostPort,
    model: z
        .string()
        .regex(/^[a-z][a-z0-9-]*\/[A-Za-z0-9._:/-]+$/, "must be <provider>/<model>, the provider one of keyProxy.providers")
        .default("anthropic/claude-sonnet-4-5"),
    resources: resources({ memoryMb: 2048, cpus: 1, pids: 512 }),
    egress: z
        .strictObject({
            mode: z.enum(["enforce", "report"]).default("enforce"),
            allow: z.array(egressRule).default([]),
        })
        .prefault({}),
    budget,
    credentialEpoch: epoch.default(1),
    subnet: z.string().optional(),
    /** Turn on the gateway's OpenAI-compatible chat endpoint (token-authenticated; off by default). */
    chatCompletionsApi: z.boolean().default(false),
    /**
     * Third-party skill folders (relative to the project root, or absolute). Each is scanned while the program is
     * evaluated and delivered read-only to /etc/openclaw/skills/<folder name> only if clean or overridden.
     */
    skills: z.array(z.string().min(1)).default([]),
    /** An OCI runtime registered with the Docker engine, e.g. `runsc` for gVisor. */
    runtime: z.string().regex(/^[a-z][a-z0-9._-]{0,62}$/, "must be the name of a runtime registered with the Docker engine, e.g. runsc").optional(),
});

const provider = (defaultBaseUrl: string) =>
    z.strictObject({ baseUrl: httpsUrl.default(defaultBaseUrl), keyEpoch: epoch.default(1) });

/** One OpenAI-compatible endpoint, routed under /<id>/ with its own key (`<id>ApiKey`) and prices. */
const openaiCompatibleInstance = z.strictObject({
    id: z.string().regex(PROVIDER_ID, "must be a short lowercase name (letters, digits, '-'), e.g. openrouter"),
    /** The URL the API's `/v1/...` paths follow, e.g. https://openrouter.ai/api. */
    baseUrl: httpsUrl,
    keyEpoch: epoch.default(1),
    /** USD per million tokens by model id prefix; models not named are billed at the fallback price. */
    prices: z.record(z.string().min(1), priceSchema).default({}),
});

const builtInProviders = Object.fromEntries(BUILT_IN.map((p) => [p.id, provider(p.defaultBaseUrl!).optional()])) as Record<string, z.ZodOptional<ReturnType<typeof provider>>>;

const keyProxySchema = z
    .strictObject({
        image: image.default("openclaw-key-proxy:0.1.0"),
        /**
         * The built-in providers (providers/<id>.ts), each enabled by its entry (by default those marked so), and any
         * number of OpenAI-compatible endpoints.
         */
        providers: z
            .strictObject({ ...builtInProviders, openaiCompatible: z.array(openaiCompatibleInstance).default([]) })
            .prefault(Object.fromEntries(BUILT_IN.filter((p) => p.enabledByDefault).map((p) => [p.id, {}])))
            .superRefine((providers, ctx) => {
                if (enabledProviders({ providers }).length === 0) ctx.addIssue({ code: "custom", message: "enable at least one provider" });
                const seen = new Set<string>(BUILT_IN.map((p) => p.id));
                providers.openaiCompatible.forEach((instance, i) => {
                    if (seen.has(instance.id)) ctx.addIssue({ code: "custom", path: ["openaiCompatible", i, "id"], message: `'${instance.id}' is already a provider's route: choose another id` });
                    seen.add(instance.id);
                });
            }),
        resources: resources(SERVICE_RESOURCES.keyProxy),
        /** Budgets' days and months start at midnight in this IANA time zone. */
        budgetTimeZone: z.string().refine(isTimeZone, "must be an IANA time zone such as UTC or Europe/Berlin").default("UTC"),
        /** USD per million tokens by model id prefix, merged over the built-in list prices. */
        prices: z.record(z.string().min(1), priceSchema).default({}),
        /** Price for models the table does not name (default: the dearest list price). */
        fallbackPrice: priceSchema.optional(),
        /** Output cap written into requests that set none, so every reservation is bounded. */
        defaultMaxOutputTokens: z.number().int().min(1).max(1_000_000).default(32_000),
        /**
         * The budget lease: the slice of an agent's budget written to the ledger at once, then spent in memory. A crash
         * over-counts an agent by at most this much; 0 writes every request's reservation (docs/ledger.md).
         */
        budgetLeaseUsd: z.number().min(0).max(100).default(0.25),
        /** When its audit stream becomes a segment, and how many segments are kept (docs/audit.md). */
        auditRotation: auditRotationSchema.prefault({}),
        /** A CA to trust for upstreams besides the system roots (private mirrors, test stand-ins). */
        extraCaPem: pemCertificate.optional(),
    })
    .prefault({});

/** The Ingress: the one way in to the agents from outside the host (docs/ingress.md). */
const ingress = z.strictObject({
    image: image.default("openclaw-ingress:0.1.0"),
    /** The host port, on network.publishAddress, of its TLS listener. */
    port: hostPort.default(8443),
    /** DNS names clients reach it by, for its certificate (besides the publish address and localhost). */
    hostnames: z.array(z.string().refine((value) => canonicalHost(value) === value && !value.startsWith("*."), "must be a DNS name in lower case, without a trailing dot")).default([]),
    /**
     * An operator-supplied certificate instead of the stack's own CA: the chain (PEM, leaf first); its private key is
     * the secret `ingressTlsKeyPem`. It must cover network.publishAddress or one of `hostnames`.
     */
    certificate: z.strictObject({ certPem: pemCertificate }).optional(),
    users: z
        .array(
            z.strictObject({
                name: dnsLabel,
                /** The agents this user's token reaches. */
                agents: z.array(dnsLabel).min(1, "name at least one agent this user may reach"),
                /** Bump to rotate the user's token (the old one stops working at once). */
                tokenEpoch: epoch.default(1),
            }),
        )
        .default([]),
    /** Prompt-injection rules on chat requests (RE2 patterns); absent: the default set (contracts/ingress.ts). */
    rules: z.array(ruleSchema).default(DEFAULT_RULES),
    limits: z.strictObject(userLimits).prefault({}),
    auditRotation: auditRotationSchema.prefault({}),
    resources: resources(SERVICE_RESOURCES.ingress),
});

/** A Kubernetes object name that must also be a DNS label (namespaces). */
const k8sLabelName = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, "must be a DNS label: lowercase letters, digits and '-', at most 63 characters");
/** A DNS subdomain, as RuntimeClass and StorageClass names are. */
const DNS_SUBDOMAIN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const k8sSubdomainName = z.string().max(253).regex(DNS_SUBDOMAIN, "must be a DNS subdomain: lowercase letters, digits, '-' and '.'");

const kubernetes = z
    .strictObject({
        /** The kubeconfig context to deploy to (default: the current context). */
        context: z.string().min(1).optional(),
        /** The stack's namespace (default openclaw-<stack>); the program creates it and owns everything in it. */
        namespace: k8sLabelName.optional(),
        /** RuntimeClass of every agent pod (gVisor, Kata), unless the agent names its own in agents[].runtime. */
        runtimeClassName: k8sSubdomainName.optional(),
        /** StorageClass of the agents', KeyProxy's and EgressGateway's volumes (default: the cluster's default class). */
        storageClassName: k8sSubdomainName.optional(),
        agentStorageGi: z.number().int().min(1).max(10240).default(10),
        keyProxyStorageGi: z.number().int().min(1).max(1024).default(1),
        /** EgressGateway's audit stream (docs/audit.md). */
        egressAuditStorageGi: z.number().int().min(1).max(1024).default(1),
        /** The namespace whose pods may scrape KeyProxy's and EgressGateway's metrics (absent: nobody). */
        monitoringNamespace: k8sLabelName.optional(),
        /** The cluster DNS the services (never the agents) resolve upstream names with. */
        clusterDns: z
            .strictObject({ namespace: k8sLabelName.default("kube-system"), podLabels: z.record(z.string().min(1), z.string()).default({ "k8s-app": "kube-dns" }) })
            .prefault({}),
    })
    .prefault({});

/** Every key's own schema; `schema` adds the checks across fields. */
export const configFields = z
    .strictObject({
        dockerHost: z
            .string()
            .regex(/^(unix|tcp|ssh):\/\/\S+$/, "must be a unix://, tcp:// or ssh:// Docker host URL")
            .default("unix:///var/run/docker.sock"),
        network: z
            .strictObject({
                addressPool: z.string().default("10.64.0.0/10"),
                agentSubnetPrefix: z.number().int().min(MIN_AGENT_PREFIX).max(MAX_AGENT_PREFIX).default(28),
                publishAddress: singleAddress.default("127.0.0.1"),
                /** The uplink network's subnet (KeyProxy and EgressGateway have fixed addresses on it). */
                uplinkSubnet: z.string().default("10.63.255.0/24"),
            })
            .prefault({}),
        agents: z.array(agent).min(1, "declare at least one agent"),
        keyProxy: keyProxySchema,
        egress: z
            .strictObject({
                image: image.default("openclaw-egress-gateway:0.1.0"),
                defaultPorts: z.array(port).min(1).default([443]),
                allowForAll: z.array(egressRule).default([]),
                resources: resources(SERVICE_RESOURCES.egressGateway),
                /** Private ranges agents may reach after all. Empty by default: only for stand-in upstreams in tests. */
                allowPrivateRanges: z
                    .array(z.string().refine((cidr) => { try { parseBlock(cidr); return true; } catch { return false; } }, "must be an IPv4 CIDR"))
                    .default([]),
                auditRotation: auditRotationSchema.prefault({}),
            })
            .prefault({}),
        monitoring: z
            .strictObject({
                host: z.string().regex(SSH_HOST, "must be ssh://user@host[:port]"),
                sshOpts: z.array(z.string()).default([]),
                /** The monitoring host's own address that Grafana and Uptime Kuma are published on (its public IPv4). */
                publishAddress: singleAddress,
                ports: z
                    .strictObject({ grafana: hostPort.default(3000), uptimeKuma: hostPort.default(3001) })
                    .prefault({}),
                scrape: z.strictObject({
                    /** The agents' host as the monitoring host dials it (DNS name or IPv4); the metrics certificate names it. */
                    address: z.string().refine((value) => ipaddr.IPv4.isValidFourPartDecimal(value) || (canonicalHost(value) === value && !value.startsWith("*.")), "must be a DNS name or an IPv4 address"),
                    /** The agents' host address the metrics endpoints are published on (an explicit opt-in, as for dashboards). */
                    publishAddress: singleAddress,
                    ports: z
                        .strictObject({ keyProxy: hostPort.default(9464), egressGateway: hostPort.default(9465) })
                        .prefault({}),
                }),
                retentionDays: z.number().int().min(1).max(3650).default(30),
                images: z
                    .strictObject({
                        prometheus: image.default("prom/prometheus:v3.7.3"),
                        grafana: image.default("grafana/grafana:12.2.1"),
                        uptimeKuma: image.default("louislam/uptime-kuma:2.0.2-rootless"),
                    })
                    .prefault({}),
                resources: z
                    .strictObject({
                        prometheus: resources({ memoryMb: 1024, cpus: 1, pids: 256 }),
                        grafana: resources({ memoryMb: 512, cpus: 1, pids: 256 }),
                        uptimeKuma: resources({ memoryMb: 512, cpus: 0.5, pids: 256 }),
                    })
                    .prefault({}),
                /** Alert thresholds. */
                alerts: z
                    .strictObject({
                        /** Share of upstream responses that are 5xx, over 5 minutes. */
                        errorRatio: z.number().gt(0).lt(1).default(0.05),
                        /** Egress denials per minute, per agent. */
                        egressDenialsPerMinute: z.number().positive().default(30),
                    })
                    .prefault({}),
                /** Hardening a monitoring image cannot take, by service and policy, each with its reason (reported as advisory). */
                hardeningExceptions: z
                    .partialRecord(z.enum(MONITORING_SERVICES), z.partialRecord(z.enum(RELAXABLE_POLICIES), z.string().min(10, "give the reason (at least 10 characters)")))
                    .default({}),
            })
            .optional(),
        ingress: ingress.optional(),
        backend: z.enum(BACKENDS).default("docker"),
        kubernetes,
    });

/** One problem a cross-field check finds: the config key path, and what is wrong there. */
export interface ConfigIssue {
    path: (string | number)[];
    message: string;
}

/** `agents[i] (name)`, how a message names an agent. */
const agentLabel = (a: { name: string }, i: number) => `agents[${i}] (${a.name})`;

/** The agent holding each dashboard port, first come (a later agent on a held port is `uniqueDashboardPorts`' issue). */
function dashboardPortHolders(config: ParsedConfig): Map<number, string> {
    const holders = new Map<number, string>();
    config.agents.forEach((a, i) => {
        if (!holders.has(a.dashboardPort)) holders.set(a.dashboardPort, agentLabel(a, i));
    });
    return holders;
}

/**
 * A block for Docker networks of ours: a valid IPv4 CIDR (with a prefix in `prefixes` when given), clear of Docker's
 * default pools and inside the private ranges; otherwise the problem.
 */
function privateBlock(cidr: string, prefixes?: [number, number]): { block: Block } | { problem: string } {
    try {
        const block = parseBlock(cidr);
        if (prefixes && (block.prefix < prefixes[0] || block.prefix > prefixes[1])) return { problem: `${cidr} must be between /${prefixes[0]} and /${prefixes[1]}` };
        const defaultPool = DOCKER_DEFAULT_POOLS.find((p) => overlaps(block, parseBlock(p)));
        if (defaultPool) return { problem: `${cidr} overlaps Docker's default address pool ${defaultPool}` };
        if (!PRIVATE_RANGES.some((range) => contains(parseBlock(range), block))) return { problem: `${cidr} must lie inside ${PRIVATE_RANGES.join(", ")}` };
        return { block };
    } catch (error) {
        return { problem: (error as Error).message };
    }
}

const UPLINK_PREFIXES: [number, number] = [16, 29];

/** The agents' pool and the uplink subnet: each a private block clear of Docker's pools, and apart from each other. */
function networkBlocks(config: ParsedConfig): ConfigIssue[] {
    const { addressPool, uplinkSubnet } = config.network;
    const pool = privateBlock(addressPool);
    const uplink = privateBlock(uplinkSubnet, UPLINK_PREFIXES);
    const issues: ConfigIssue[] = [];
    if ("problem" in pool) issues.push({ path: ["network", "addressPool"], message: pool.problem });
    if ("problem" in uplink) issues.push({ path: ["network", "uplinkSubnet"], message: uplink.problem });
    if ("block" in pool && "block" in uplink && overlaps(pool.block, uplink.block)) {
        issues.push({ path: ["network", "uplinkSubnet"], message: `${uplinkSubnet} overlaps the agents' pool ${addressPool}` });
    }
    return issues;
}

function uniqueAgentNames(config: ParsedConfig): ConfigIssue[] {
    const first = new Map<string, number>();
    return config.agents.flatMap((a, i) => {
        const earlier = first.get(a.name);
        if (earlier === undefined) first.set(a.name, i);
        return earlier === undefined ? [] : [{ path: ["agents", i, "name"], message: `duplicate agent name '${a.name}' (also agents[${earlier}])` }];
    });
}

function uniqueDashboardPorts(config: ParsedConfig): ConfigIssue[] {
    const holders = dashboardPortHolders(config);
    return config.agents.flatMap((a, i) => {
        const holder = holders.get(a.dashboardPort)!;
        return holder === agentLabel(a, i) ? [] : [{ path: ["agents", i, "dashboardPort"], message: `host port ${a.dashboardPort} is already used by ${holder}` }];
    });
}

/** Each skill folder exists, is named like a skill, and no two of an agent's skills share a folder name. */
function agentSkills(config: ParsedConfig): ConfigIssue[] {
    return config.agents.flatMap((a, i) => {
        const first = new Map<string, number>();
        return a.skills.flatMap((dir, j): ConfigIssue[] => {
            const at = ["agents", i, "skills", j];
            const problem = skillDirProblem(dir);
            if (problem) return [{ path: at, message: problem }];
            const name = path.basename(resolveSkillDir(dir));
            const earlier = first.get(name);
            if (earlier === undefined) first.set(name, j);
            return earlier === undefined ? [] : [{ path: at, message: `skill name '${name}' is already skills[${earlier}] (skills are delivered by folder name)` }];
        });
    });
}

/** Each agent's model is of a provider KeyProxy has enabled. */
function agentProvidersEnabled(config: ParsedConfig): ConfigIssue[] {
    return config.agents.flatMap((a, i) => {
        const [providerId] = a.model.split("/");
        return !enabledProviders(config.keyProxy).some((p) => p.id === providerId) ? [{ path: ["agents", i, "model"], message: `provider '${providerId}' is not enabled in keyProxy.providers` }] : [];
    });
}

/** The monitoring host's published ports apart from each other and from SSH; the scrape ports apart from each other and the dashboards'. */
function monitoringPorts(config: ParsedConfig): ConfigIssue[] {
    if (!config.monitoring) return [];
    const { ports, scrape, host } = config.monitoring;
    const ssh = sshTarget(host).port;
    const holders = dashboardPortHolders(config);
    const issues: ConfigIssue[] = [];
    if (ports.grafana === ports.uptimeKuma) issues.push({ path: ["monitoring", "ports", "uptimeKuma"], message: `host port ${ports.uptimeKuma} is already Grafana's` });
    for (const [service, value] of Object.entries(ports)) {
        if (value === ssh) issues.push({ path: ["monitoring", "ports", service], message: `host port ${value} is the monitoring host's SSH port` });
    }
    if (scrape.ports.keyProxy === scrape.ports.egressGateway) {
        issues.push({ path: ["monitoring", "scrape", "ports", "egressGateway"], message: `host port ${scrape.ports.egressGateway} is already KeyProxy's` });
    }
    for (const [service, value] of Object.entries(scrape.ports)) {
        const holder = holders.get(value);
        if (holder !== undefined) issues.push({ path: ["monitoring", "scrape", "ports", service], message: `host port ${value} is already used by ${holder}` });
    }
    return issues;
}

/** The pool holds a subnet for every agent, and the agents' subnets (hashed or pinned) do not collide. */
function subnetAllocation(config: ParsedConfig): ConfigIssue[] {
    const { addressPool, agentSubnetPrefix: prefix } = config.network;
    const pool = privateBlock(addressPool);
    // A bad pool is `networkBlocks`' issue, duplicate names `uniqueAgentNames`': allocating then says nothing more.
    if (!("block" in pool)) return [];
    const slots = slotCount(pool.block, prefix);
    if (slots < config.agents.length) {
        return [{ path: ["network", "addressPool"], message: `pool ${addressPool} holds ${slots} /${prefix} subnets, too few for ${config.agents.length} agents` }];
    }
    if (new Set(config.agents.map((a) => a.name)).size !== config.agents.length) return [];
    const allocation = allocateSubnets(addressPool, prefix, config.agents);
    return allocation.ok ? [] : allocation.conflicts.map((conflict) => ({ path: ["agents", conflict.index, "subnet"], message: conflict.message }));
}

/** The Ingress: its users' names and agents, its host port apart from the others, and every rule compiling on RE2. */
function ingressUsersPortAndRules(config: ParsedConfig): ConfigIssue[] {
    if (!config.ingress) return [];
    const { port, users, rules } = config.ingress;
    const issues: ConfigIssue[] = [];
    const holders = dashboardPortHolders(config);
    for (const [service, value] of Object.entries(config.monitoring?.scrape.ports ?? {})) holders.set(value, `monitoring.scrape.ports.${service}`);
    const holder = holders.get(port);
    if (holder !== undefined) issues.push({ path: ["ingress", "port"], message: `host port ${port} is already used by ${holder}` });
    const agents = new Set(config.agents.map((a) => a.name));
    const firstUser = new Map<string, number>();
    users.forEach((user, i) => {
        const earlier = firstUser.get(user.name);
        if (earlier === undefined) firstUser.set(user.name, i);
        else issues.push({ path: ["ingress", "users", i, "name"], message: `duplicate user name '${user.name}' (also ingress.users[${earlier}])` });
        user.agents.forEach((agent, j) => {
            if (!agents.has(agent)) issues.push({ path: ["ingress", "users", i, "agents", j], message: `no agent named '${agent}' in agents` });
        });
    });
    const firstRule = new Map<string, number>();
    rules.forEach((rule, i) => {
        const earlier = firstRule.get(rule.id);
        if (earlier === undefined) firstRule.set(rule.id, i);
        else issues.push({ path: ["ingress", "rules", i, "id"], message: `duplicate rule id '${rule.id}' (also ingress.rules[${earlier}])` });
        try {
            compileRule(rule);
        } catch (error) {
            issues.push({ path: ["ingress", "rules", i, "pattern"], message: (error as Error).message });
        }
    });
    return issues;
}

/** What only the Kubernetes backend asks of the config; the rest is shared with the Docker backend. */
function kubernetesBackend(config: ParsedConfig): ConfigIssue[] {
    if (config.backend !== "kubernetes") return [];
    const issues: ConfigIssue[] = [];
    if (config.ingress !== undefined) {
        issues.push({ path: ["ingress"], message: "the Ingress is deployed on the docker backend only so far: remove it, or deploy on docker" });
    }
    if (config.monitoring !== undefined) {
        issues.push({ path: ["monitoring"], message: "the monitoring VPS scrapes ports published on a Docker host; on kubernetes set kubernetes.monitoringNamespace instead" });
    }
    config.agents.forEach((a, i) => {
        // The agent's port on KeyProxy and EgressGateway is its dashboardPort (docs/kubernetes.md): it must not be one of theirs.
        if ((KUBERNETES_RESERVED_PORTS as readonly number[]).includes(a.dashboardPort)) {
            issues.push({ path: ["agents", i, "dashboardPort"], message: `port ${a.dashboardPort} is one KeyProxy or EgressGateway listens on itself; on kubernetes it is also the agent's port on them` });
        }
        if (a.runtime !== undefined && !DNS_SUBDOMAIN.test(a.runtime)) {
            issues.push({ path: ["agents", i, "runtime"], message: "on kubernetes this names a RuntimeClass: a DNS subdomain (lowercase letters, digits, '-' and '.')" });
        }
        if (a.skills.length > 0) {
            issues.push({ path: ["agents", i, "skills"], message: "approved skills are delivered on the docker backend only so far: remove them, or deploy this agent on docker" });
        }
    });
    return issues;
}

/** The checks across fields, each pure on the config the field schemas parsed; they run only once every field is valid. */
export const CROSS_FIELD_CHECKS = {
    networkBlocks,
    uniqueAgentNames,
    uniqueDashboardPorts,
    agentSkills,
    agentProvidersEnabled,
    kubernetesBackend,
    monitoringPorts,
    ingressUsersPortAndRules,
    subnetAllocation,
} satisfies Record<string, (config: ParsedConfig) => ConfigIssue[]>;

const schema = configFields.superRefine((config, ctx) => {
    for (const check of Object.values(CROSS_FIELD_CHECKS)) for (const issue of check(config)) ctx.addIssue({ code: "custom", ...issue });
});

/** The config as the field schemas parse it, before the cross-field checks. */
export type ParsedConfig = z.output<typeof configFields>;
/** One provider a stack enables: its entry in the registry, where it is reached and its key's epoch. */
export interface EnabledProvider {
    id: string;
    /** The registry entry's id (providers/<kind>.ts). */
    kind: string;
    baseUrl: string;
    keyEpoch: number;
    /** The secret config key holding its real key. */
    secretKey: string;
    /** Its own prices (instances), looked up before the shared table. */
    prices: Record<string, Price>;
}

/** The providers a stack enables, in registry order. */
export function enabledProviders(keyProxy: { providers: ProvidersConfig }): EnabledProvider[] {
    const builtIn = BUILT_IN.flatMap((spec) => {
        const entry = keyProxy.providers[spec.id] as z.output<ReturnType<typeof provider>> | undefined;
        return entry === undefined ? [] : [{ id: spec.id, kind: spec.id, baseUrl: entry.baseUrl, keyEpoch: entry.keyEpoch, secretKey: secretConfigKey(spec.id), prices: {} }];
    });
    const instances = keyProxy.providers.openaiCompatible.map((instance) => ({ ...instance, kind: OPENAI_COMPATIBLE_KIND, secretKey: secretConfigKey(instance.id) }));
    return [...builtIn, ...instances];
}

type ProvidersConfig = Record<string, unknown> & { openaiCompatible: z.output<typeof openaiCompatibleInstance>[] };

/** The secret config keys a stack's raw config needs: those of the providers it enables (all, when that is unreadable). */
export function requiredSecretKeys(raw: Record<string, unknown>): string[] {
    const keyProxy = keyProxySchema.safeParse(raw.keyProxy);
    const ingress = raw.ingress as { certificate?: unknown } | undefined;
    return [...(keyProxy.success ? enabledProviders(keyProxy.data).map((p) => p.secretKey) : providerSecretKeys()), ...(ingress?.certificate !== undefined ? [INGRESS_TLS_KEY] : [])];
}

/** The stand-in offline tools give a required secret they cannot read. */
export function unreadSecretPlaceholder(key: string): string {
    return key === INGRESS_TLS_KEY ? TLS_KEY_NOT_READ : "checked-at-deploy";
}

/**
 * The provider secrets a stack file may hold, one per built-in provider and per OpenAI-compatible endpoint it
 * declares: the config key, and the environment variable the deploy wrapper stores it from.
 */
export function providerSecrets(raw: Record<string, unknown> = {}): { secretKey: string; env: string }[] {
    const keyProxy = keyProxySchema.safeParse(raw.keyProxy);
    const instances = keyProxy.success ? keyProxy.data.providers.openaiCompatible.map((i) => i.id) : [];
    return [...BUILT_IN.map((p) => p.id), ...instances].map((id) => ({ secretKey: secretConfigKey(id), env: secretEnv(id) }));
}

export function providerSecretKeys(raw: Record<string, unknown> = {}): string[] {
    return providerSecrets(raw).map((s) => s.secretKey);
}

/**
 * Problems with the provider secrets (`<provider>ApiKey`, kept out of the schema so each provider brings its own):
 * empty ones, ones no provider reads, and missing ones of enabled providers.
 */
function secretProblems(secrets: Record<string, unknown>, raw: Record<string, unknown>): string[] {
    const problems: string[] = [];
    const known = providerSecretKeys(raw);
    for (const [key, value] of Object.entries(secrets)) {
        if (value === undefined) continue;
        if (!known.includes(key)) {
            const suggestion = closest(key, known);
            problems.push(`${configKeyPath([key])}: unknown key; ${suggestion ? `did you mean '${suggestion}'?` : `no provider reads it (known: ${known.join(", ")})`}`);
        } else if (typeof value !== "string" || value.length === 0) {
            problems.push(`${configKeyPath([key])}: is empty: set the real key with \`pulumi config set --secret ${key}\` (or npm run deploy with it in the environment)`);
        }
    }
    // Judged on the keyProxy section alone, so a missing key is reported with every other problem of the file.
    const keyProxy = keyProxySchema.safeParse(raw.keyProxy);
    for (const provider of keyProxy.success ? enabledProviders(keyProxy.data) : []) {
        if (secrets[provider.secretKey] !== undefined) continue;
        problems.push(
            `${configKeyPath([provider.secretKey])}: missing secret: the real ${provider.id} API key; set it with \`pulumi config set --secret ${provider.secretKey}\` or disable keyProxy.providers.${provider.id}`,
        );
    }
    return problems;
}
const PEM_CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Problems with an operator-supplied Ingress certificate (`ingress.certificate.certPem`) and its secret key
 * (`ingressTlsKeyPem`): both or neither; the chain parses and is in order, leaf first; the leaf is valid at `now`,
 * belongs to the key and covers network.publishAddress or one of ingress.hostnames. Names the key, never shows it.
 */
export function ingressCertificateProblems(config: Pick<ParsedConfig, "ingress" | "network">, keyPem: unknown, now = new Date()): string[] {
    const certKey = configKeyPath(["ingress", "certificate", "certPem"]);
    const tlsKey = configKeyPath([INGRESS_TLS_KEY]);
    const certPem = config.ingress?.certificate?.certPem;
    if (certPem === undefined && keyPem === undefined) return [];
    if (certPem === undefined) {
        return [`${tlsKey}: set without ${certKey}: add the certificate chain this key belongs to, or remove the key (\`npm run pulumi -- config rm ${INGRESS_TLS_KEY}\`) to use the stack's own CA`];
    }
    if (keyPem === undefined) {
        return [`${certKey}: its private key ${tlsKey} is not set: \`npm run pulumi -- config set --secret ${INGRESS_TLS_KEY} < key.pem\`, or remove ingress.certificate to use the stack's own CA`];
    }
    if (typeof keyPem !== "string" || keyPem.trim() === "") return [`${tlsKey}: is empty: \`npm run pulumi -- config set --secret ${INGRESS_TLS_KEY} < key.pem\``];
    const chain: X509Certificate[] = [];
    for (const [i, block] of (certPem.match(PEM_CERTIFICATE_BLOCK) ?? []).entries()) {
        try {
            chain.push(new X509Certificate(block));
        } catch {
            return [`${certKey}: certificate ${i + 1} of the chain does not parse as X.509`];
        }
    }
    const [leaf] = chain;
    if (leaf === undefined) return [`${certKey}: holds no PEM certificate`];
    const problems: string[] = [];
    if (leaf.validFromDate > now) problems.push(`${certKey}: the leaf certificate is not valid before ${leaf.validFromDate.toISOString()}`);
    if (leaf.validToDate < now) problems.push(`${certKey}: the leaf certificate expired on ${leaf.validToDate.toISOString()}: renew it`);
    for (let i = 0; i + 1 < chain.length; i++) {
        if (!chain[i].checkIssued(chain[i + 1]) || !chain[i].verify(chain[i + 1].publicKey)) {
            problems.push(`${certKey}: certificate ${i + 1} of the chain is not issued by certificate ${i + 2}: list the chain leaf first, each certificate followed by its issuer`);
        }
    }
    let key;
    try {
        if (keyPem !== TLS_KEY_NOT_READ) key = createPrivateKey(keyPem);
    } catch {
        problems.push(`${tlsKey}: is not a readable unencrypted PEM private key`);
    }
    if (key && !leaf.checkPrivateKey(key)) problems.push(`${certKey}: the leaf certificate does not belong to the private key in ${tlsKey}`);
    const { publishAddress } = config.network;
    const hostnames = config.ingress?.hostnames ?? [];
    if (!leaf.checkIP(publishAddress) && !hostnames.some((host) => leaf.checkHost(host, { subject: "never" }) !== undefined)) {
        problems.push(
            `${certKey}: the leaf certificate (${leaf.subjectAltName ?? "no subject alternative names"}) covers neither network.publishAddress ${publishAddress} nor any of ingress.hostnames (${hostnames.join(", ") || "none set"}): clients would refuse it`,
        );
    }
    return problems;
}

export type AgentConfig = ParsedConfig["agents"][number] & { subnet: string };
export type KeyProxyConfig = ParsedConfig["keyProxy"];
export type EgressConfig = ParsedConfig["egress"];
export type MonitoringConfig = NonNullable<ParsedConfig["monitoring"]>;
/** An operator-supplied certificate for the Ingress: the chain as the stack file holds it and the secret key. */
export interface OperatorCertificate {
    certPem: string;
    keyPem: string;
}
export type IngressStackConfig = Omit<NonNullable<ParsedConfig["ingress"]>, "certificate"> & {
    /** Absent: the listener's certificate comes from the stack's own CA. */
    certificate?: OperatorCertificate;
};
export type KubernetesConfig = ParsedConfig["kubernetes"];
export type StackConfig = Omit<ParsedConfig, "agents" | "ingress"> & {
    agents: AgentConfig[];
    ingress?: IngressStackConfig;
    /** The real key of each enabled provider, by provider id. */
    providerKeys: Record<string, string>;
};

/** Thrown for invalid stack config; every line names the config key path, what is wrong with it and the fix. */
export class ConfigError extends Error {
    constructor(
        readonly problems: string[],
        /** The stack file the config comes from, when known. */
        readonly file?: string,
        readonly heading = "invalid config",
    ) {
        super(`${heading}${file ? ` in ${file}` : ""}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
        this.name = "ConfigError";
    }
}

export function configKeyPath(path: readonly PropertyKey[]): string {
    const [head, ...rest] = path;
    let out = `${NAMESPACE}:${String(head ?? "")}`;
    for (const part of rest) out += typeof part === "number" ? `[${part}]` : `.${String(part)}`;
    return out;
}

/**
 * Validates raw stack config (the `openclaw:` keys without their namespace, values already JSON-decoded)
 * and resolves every agent's subnet. Throws ConfigError naming each bad key (and `file`, the stack file the
 * config comes from); never declares anything.
 */
export function parseStackConfig(raw: Record<string, unknown>, file?: string): StackConfig {
    const { [INGRESS_TLS_KEY]: tlsKeyPem, ...rest } = raw;
    const secrets = Object.fromEntries(Object.entries(rest).filter(([key]) => SECRET_KEY.test(key)));
    const result = schema.safeParse(Object.fromEntries(Object.entries(rest).filter(([key]) => !SECRET_KEY.test(key))), { reportInput: true });
    const problems = [
        ...(result.success ? ingressCertificateProblems(result.data, tlsKeyPem) : result.error.issues.flatMap(describeIssue)),
        ...secretProblems(secrets, rest),
    ];
    if (problems.length > 0) throw new ConfigError([...new Set(problems)], file);
    const config = result.data!;
    const ingress = config.ingress && { ...config.ingress, certificate: config.ingress.certificate && { certPem: config.ingress.certificate.certPem, keyPem: tlsKeyPem as string } };
    const allocation = allocateSubnets(config.network.addressPool, config.network.agentSubnetPrefix, config.agents);
    if (!allocation.ok) throw new ConfigError(allocation.conflicts.map((c) => `${configKeyPath(["agents", c.index, "subnet"])}: ${c.message}`), file);
    const providerKeys = Object.fromEntries(enabledProviders(config.keyProxy).map((p) => [p.id, secrets[p.secretKey] as string]));
    return { ...config, ingress, providerKeys, agents: config.agents.map((a) => ({ ...a, subnet: allocation.subnets.get(a.name)! })) };
}

/** The unit a numeric key's name ends in. */
const UNITS: [RegExp, string][] = [[/Mb$/, "MiB"], [/Usd$/, "US dollars"], [/Days$/, "days"]];

/** One line per problem: the key, what is wrong, and how to fix it. zod's own wording is replaced where it is vague. */
function describeIssue(issue: z.core.$ZodIssue): string[] {
    const key = configKeyPath(issue.path);
    const last = String(issue.path[issue.path.length - 1] ?? "");
    if (issue.code === "unrecognized_keys") {
        const known = keysAt(issue.path);
        return issue.keys.map((unknown) => {
            const suggestion = closest(unknown, known);
            const fix = suggestion ? `did you mean '${suggestion}'?` : `remove it${known.length > 0 ? ` (known here: ${known.join(", ")})` : ""}`;
            return `${configKeyPath([...issue.path, unknown])}: unknown key; ${fix}`;
        });
    }
    if (issue.code === "invalid_type") {
        if (issue.input === undefined) return [`${key}: required: add it (${article(issue.expected)})`];
        const unit = UNITS.find(([suffix]) => suffix.test(last))?.[1];
        const hint = issue.expected === "number" && typeof issue.input === "string" ? `: write the number alone, without quotes or a unit${unit ? ` (${last} is in ${unit})` : ""}` : "";
        return [`${key}: must be ${article(issue.expected)}, not ${shown(issue.input)}${hint}`];
    }
    if (issue.code === "invalid_value") return [`${key}: must be one of ${issue.values.map(String).join(", ")}, not ${shown(issue.input)}`];
    const vague = /^(Too small|Too big|Invalid input)/.test(issue.message);
    if (vague && (issue.code === "too_small" || issue.code === "too_big")) {
        const small = issue.code === "too_small";
        const bound = Number(small ? issue.minimum : issue.maximum);
        if (issue.origin === "string" && small && bound === 1) return [`${key}: must not be empty`];
        const relation = small ? (issue.inclusive ? "at least" : "more than") : issue.inclusive ? "at most" : "less than";
        const count = issue.origin === "array" ? " entries" : issue.origin === "string" ? " characters" : "";
        return [`${key}: must ${count ? "have" : "be"} ${relation} ${bound}${count}, not ${shown(issue.input)}`];
    }
    return [`${key}: ${issue.message}`];
}

const article = (type: string) => `${/^[aeiou]/.test(type) ? "an" : "a"} ${type}`;

function shown(value: unknown): string {
    if (typeof value === "string") return `the string '${value}'`;
    if (Array.isArray(value)) return `a list of ${value.length}`;
    if (value !== null && typeof value === "object") return "a map";
    return String(value);
}

/** The keys the schema knows at `path` (an object's keys, or a record's enum keys), for "did you mean". */
function keysAt(path: readonly PropertyKey[]): string[] {
    const unwrap = (node: z.core.$ZodType): z.core.$ZodType => {
        const def = node._zod.def as { type: string; innerType?: z.core.$ZodType; in?: z.core.$ZodType };
        if (def.innerType) return unwrap(def.innerType);
        if (def.type === "pipe" && def.in) return unwrap(def.in);
        return node;
    };
    let node: z.core.$ZodType | undefined = unwrap(schema);
    for (const part of path) {
        const def = node._zod.def as { type: string; shape?: Record<string, z.core.$ZodType>; element?: z.core.$ZodType; valueType?: z.core.$ZodType };
        node = def.type === "object" ? def.shape![String(part)] : def.type === "array" ? def.element : def.type === "record" ? def.valueType : undefined;
        if (!node) return [];
        node = unwrap(node);
    }
    const def = node._zod.def as { type: string; shape?: Record<string, unknown>; keyType?: z.core.$ZodType };
    if (def.type === "object") return Object.keys(def.shape!);
    const entries = def.type === "record" ? (unwrap(def.keyType!)._zod.def as { entries?: Record<string, string> }).entries : undefined;
    return entries ? Object.values(entries) : [];
}

/** The candidate a near-miss `word` most likely meant: same letters in another case, or at most a third of them edited. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
    let best: { candidate: string; distance: number } | undefined;
    for (const candidate of candidates) {
        const distance = candidate.toLowerCase() === word.toLowerCase() ? 0 : editDistance(word.toLowerCase(), candidate.toLowerCase());
        if (distance <= Math.max(1, Math.floor(candidate.length / 3)) && (!best || distance < best.distance)) best = { candidate, distance };
    }
    return best?.candidate;
}

/** Levenshtein distance, with a swap of two neighbouring letters counted as one edit. */
function editDistance(a: string, b: string): number {
    const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
    for (let i = 1; i <= a.length; i++) {
        for (let j = 1; j <= b.length; j++) {
            d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
            if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
        }
    }
    return d[a.length][b.length];
}

/**
 * Problems with a stack file's top-level keys outside the `openclaw:` namespace: a key in a namespace nothing
 * reads (a misspelt `opencalw:agents` would otherwise be ignored), or without one.
 */
export function namespaceProblems(keys: readonly string[]): string[] {
    const problems: string[] = [];
    for (const key of keys) {
        const colon = key.indexOf(":");
        const namespace = colon < 0 ? "" : key.slice(0, colon);
        if (namespace === NAMESPACE || (OTHER_NAMESPACES as readonly string[]).includes(namespace)) continue;
        const name = key.slice(colon + 1);
        if (colon < 0) problems.push(`${key}: no namespace; write ${NAMESPACE}:${key}`);
        else if (closest(namespace, [NAMESPACE])) problems.push(`${key}: unknown namespace '${namespace}'; did you mean ${NAMESPACE}:${name}?`);
        else problems.push(`${key}: unknown namespace '${namespace}'; this program reads ${[NAMESPACE, ...OTHER_NAMESPACES].map((n) => `${n}:`).join(", ")} keys: rename or remove it`);
    }
    return problems;
}

/**
 * Turns Pulumi's flat config map (`openclaw:key` -> string) into the raw object parseStackConfig takes.
 * Structured values arrive as JSON. Keys of a namespace nothing reads are errors (see namespaceProblems).
 */
export function rawConfigFromPulumi(all: Record<string, string>, file?: string): Record<string, unknown> {
    const problems = namespaceProblems(Object.keys(all));
    if (problems.length > 0) throw new ConfigError(problems, file);
    const raw: Record<string, unknown> = {};
    for (const [fullKey, value] of Object.entries(all)) {
        if (!fullKey.startsWith(`${NAMESPACE}:`)) continue;
        const key = fullKey.slice(NAMESPACE.length + 1);
        raw[key] = (STRING_KEYS as readonly string[]).includes(key) || isSecretKey(key) ? value : decode(value);
    }
    return raw;
}

function decode(value: string): unknown {
    try {
        return JSON.parse(value);
    } catch {
        return value;
    }
}
