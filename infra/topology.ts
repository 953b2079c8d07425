import { formatBlock, parseBlock, size, toDotted } from "./subnets";

/** Every port the program uses, in one place. Container-side unless named otherwise. */
export const PORTS = {
    keyProxy: 8080,
    keyProxyMetrics: 9464,
    egressProxy: 3128,
    egressDns: 53,
    egressMetrics: 9465,
    /** The Ingress's TLS listener (published on the stack's publish address) and its own metrics. */
    ingress: 8443,
    ingressMetrics: 9466,
    agentDashboard: 18789,
    /** The metrics endpoints for the monitoring host: TLS and a bearer token, on the uplink address only. */
    keyProxyMetricsTls: 9443,
    egressMetricsTls: 9444,
    prometheus: 9090,
    grafana: 3000,
    uptimeKuma: 3001,
} as const;

/** The user every service container of ours runs as (the node user of the base image). */
export const SERVICE_USER = "1000:1000";
/** OpenClaw's image runs as the node user with this home. */
export const AGENT_USER = "1000:1000";
export const AGENT_HOME = "/home/node";

export { type AgentNetworkAddresses, MAX_AGENT_PREFIX, MIN_AGENT_PREFIX, agentNetworkAddresses } from "../contracts/agentNetwork";

/**
 * Fixed addresses on the uplink: where the metrics endpoints for the monitoring host listen (never on agent networks).
 * Docker hands out addresses to anything else attached there from the upper half only: measured on Docker 20.10, a
 * container given an address dynamically can take .2 while the daemon restarts containers, and KeyProxy then fails
 * to start with "Address already in use".
 */
export function uplinkAddresses(subnet: string) {
    const block = parseBlock(subnet);
    return {
        gateway: toDotted(block.base + 1),
        keyProxy: toDotted(block.base + 2),
        egressGateway: toDotted(block.base + 3),
        ingress: toDotted(block.base + 4),
        dynamicRange: formatBlock({ base: block.base + size(block.prefix) / 2, prefix: block.prefix + 1 }),
    };
}

/** Network aliases the services carry on every agent network (for humans and tools; config uses addresses). */
export const ALIASES = {
    keyProxy: "key-proxy",
    egressGateway: "egress-gateway",
    ingress: "ingress",
} as const;

/** Docker object names: one scheme, so operators and tools can find things without guessing. */
export const dockerNames = {
    uplinkNetwork: (stack: string) => `openclaw-${stack}-uplink`,
    keyProxyContainer: (stack: string) => `openclaw-${stack}-key-proxy`,
    keyProxyVolume: (stack: string) => `openclaw-${stack}-key-proxy-data`,
    egressContainer: (stack: string) => `openclaw-${stack}-egress-gateway`,
    egressVolume: (stack: string) => `openclaw-${stack}-egress-data`,
    ingressContainer: (stack: string) => `openclaw-${stack}-ingress`,
    ingressVolume: (stack: string) => `openclaw-${stack}-ingress-data`,
    agentNetwork: (stack: string, agent: string) => `openclaw-${stack}-net-agent-${agent}`,
    agentContainer: (stack: string, agent: string) => `openclaw-${stack}-agent-${agent}`,
    agentStateVolume: (stack: string, agent: string) => `openclaw-${stack}-agent-${agent}-state`,
    agentConfigVolume: (stack: string, agent: string) => `openclaw-${stack}-agent-${agent}-config`,
    agentConfigWriter: (stack: string, agent: string) => `openclaw-${stack}-agent-${agent}-config-writer`,
    monitoringNetwork: (stack: string) => `openclaw-${stack}-monitoring`,
    monitoringContainer: (stack: string, service: string) => `openclaw-${stack}-${service}`,
    monitoringVolume: (stack: string, service: string, purpose: "data" | "config") => `openclaw-${stack}-${service}-${purpose}`,
};

/** Where KeyProxy keeps its registry (and ledger) inside its container: a named volume. */
export const KEY_PROXY_DATA_DIR = "/var/lib/keyproxy";
/** How our service images start node (distroless layout; the local test base copies it). */
export const SERVICE_NODE = "/nodejs/bin/node";
export const KEY_PROXY_ENTRY = "/app/keyproxy.cjs";
/**
 * Node options of a service whose container may use `memoryMb`:
 * - A small young generation. Measured with KeyProxy under 100 concurrent requests: resident memory 268 MB with
 *   Node's default (16 MB semi-spaces), 203 MB with 2 MB; 4 MB holds the same memory as 2 MB after load and 1,000
 *   streams, with 1.29x less CPU per request, since fewer in-flight requests' objects are promoted (bench/README.md).
 * - An old generation of half the container's memory, at least 256 MB. V8 sizes its heap from the memory it sees:
 *   in a 512 MB container Node picks about 256 MB itself, but on a 24 GiB host 4 GB, and then lets the old
 *   generation grow past 100 MB before its first full collection, keeping the freed pages pooled and resident
 *   (KeyProxy: 241 against 165 MB after load and 1,000 streams). Stated here, the container, the benchmark and a
 *   Kubernetes pod all get the same heap, and V8 collects harder before the container's limit, not after it.
 */
export function serviceNodeOptions(memoryMb: number): string {
    return `--max-semi-space-size=4 --max-old-space-size=${Math.max(256, Math.floor(memoryMb / 2))}`;
}

/**
 * A service's process environment besides its own config: its Node options, and glibc's allocator told to give
 * memory back. Fast streams leave freed holes in the main arena, and at most two arenas serve Node's helper
 * threads; a 64 KiB trim threshold with no top pad returns the arena's free top to the system at once. Measured
 * with KeyProxy in the full benchmark: 145.8 MB with 1,000 streams after every load phase (158.1 without these, in
 * the run before), and the same CPU per request as the same build and heap without them, run beside it: 0.98x at
 * 100 concurrent, 1.01x at 500 req/s (bench/README.md).
 */
export function serviceProcessEnv(memoryMb: number): Record<string, string> {
    return { NODE_OPTIONS: serviceNodeOptions(memoryMb), MALLOC_ARENA_MAX: "2", MALLOC_TRIM_THRESHOLD_: "65536", MALLOC_TOP_PAD_: "0" };
}

/** An environment as `KEY=value` entries, the form a container's env list takes. */
export const envEntries = (env: Record<string, string>): string[] => Object.entries(env).map(([key, value]) => `${key}=${value}`);
export const EGRESS_DATA_DIR = "/var/lib/egress";
export const EGRESS_ENTRY = "/app/egress.cjs";
export const INGRESS_DATA_DIR = "/var/lib/ingress";
export const INGRESS_ENTRY = "/app/ingress.cjs";

/** Labels by which a stack declares what a container may do beyond the defaults (read by the policy pack). */
export const EXCEPTION_LABELS = {
    /** A host address, other than 127.0.0.1, that this container's ports may be published on. */
    publishAddress: "openclaw.publish-address",
    /** Comma-separated host paths this container may mount. */
    hostPaths: "openclaw.allowed-host-paths",
    /** `policy-name: reason` entries, `;`-separated, for hardening an image cannot take (reported as advisory). */
    hardeningExceptions: "openclaw.hardening-exceptions",
    /** `skill@hash: who accepted which findings` entries, `;`-separated: quarantined skills an admin let through. */
    skillOverrides: "openclaw.skill-overrides",
} as const;

/** Labels set on every container, so tools find agents from labels, never from guessed names. */
export const LABELS = {
    stack: "openclaw.stack",
    role: "openclaw.role",
    agent: "openclaw.agent",
    /** The local port `npm run bridge -- dashboard` forwards to an agent's gateway (its allowed browser origin). */
    dashboardPort: "openclaw.dashboard-port",
    /** The skills the deploy gate approved for an agent: `name@hash status`, comma-separated. */
    skills: "openclaw.skills",
    /** The Ingress's listener certificate: `own-ca` or `operator-certificate` (components/ingress.ts ingressTlsMode). */
    ingressTls: "openclaw.ingress-tls",
} as const;
