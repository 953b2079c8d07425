// The policies, as plain functions over a resource's type, name and inputs: CrossGuard (index.ts), the offline
// review command and the tests all call these. Exceptions are declared on the resource itself (labels), so they
// show in the preview diff and in every verdict.

import { EXCEPTION_LABELS, LABELS } from "../infra/topology";

export interface PolicyResource {
    type: string;
    name: string;
    props: Record<string, any>;
}

export type EnforcementLevel = "mandatory" | "advisory";

export interface OpenClawPolicy {
    name: string;
    description: string;
    enforcementLevel: EnforcementLevel;
    /** Violations of this resource, as messages; empty when it complies. */
    validate(resource: PolicyResource): string[];
}

export const CONTAINER = "docker:index/container:Container";
export const NETWORK = "docker:index/network:Network";


const DOCKER_SOCKETS = ["/var/run/docker.sock", "/run/docker.sock"];
const SOCKET_PROXY_ROLE = "socket-proxy";
/** Shaped like an Anthropic or OpenAI key. */
export const PROVIDER_KEY_SHAPE = /sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}/;

function labels(props: Record<string, any>): Record<string, string> {
    const list: { label: string; value: string }[] = props.labels ?? [];
    return Object.fromEntries(list.map((l) => [l.label, l.value]));
}

/** Policies a container declared it cannot meet, with the reason; those are reported as advisory instead. */
export function declaredExceptions(props: Record<string, any>): Map<string, string> {
    const raw = labels(props)[EXCEPTION_LABELS.hardeningExceptions] ?? "";
    const out = new Map<string, string>();
    for (const entry of raw.split(";").map((e) => e.trim()).filter(Boolean)) {
        const colon = entry.indexOf(":");
        if (colon > 0) out.set(entry.slice(0, colon).trim(), entry.slice(colon + 1).trim());
    }
    return out;
}

const containerPolicy = (name: string, description: string, enforcementLevel: EnforcementLevel, check: (props: Record<string, any>) => string[]): OpenClawPolicy => ({
    name,
    description,
    enforcementLevel,
    validate: (resource) => (resource.type === CONTAINER ? check(resource.props) : []),
});

function mountsOf(props: Record<string, any>): { source: string; target: string; readOnly: boolean }[] {
    const volumes = (props.volumes ?? []).filter((v: any) => v.hostPath).map((v: any) => ({ source: v.hostPath, target: v.containerPath, readOnly: v.readOnly === true }));
    const mounts = (props.mounts ?? []).filter((m: any) => m.type === "bind").map((m: any) => ({ source: m.source, target: m.target, readOnly: m.readOnly === true }));
    return [...volumes, ...mounts];
}

function envAndUploads(props: Record<string, any>): { where: string; value: string }[] {
    const envs: string[] = props.envs ?? [];
    const uploads: { file: string; content?: string }[] = props.uploads ?? [];
    return [
        ...envs.map((e) => ({ where: `env ${e.split("=")[0]}`, value: e.slice(e.indexOf("=") + 1) })),
        ...uploads.map((u) => ({ where: `upload ${u.file}`, value: u.content ?? "" })),
    ];
}

export function imageIsPinned(image: string): boolean {
    if (/@sha256:[0-9a-f]{64}$/.test(image)) return true;
    const last = image.slice(image.lastIndexOf("/") + 1);
    const colon = last.indexOf(":");
    return colon > 0 && last.slice(colon + 1) !== "latest" && last.slice(colon + 1).length > 0;
}

export const POLICIES: OpenClawPolicy[] = [
    containerPolicy("container-read-only", "Every container has a read-only root filesystem.", "mandatory", (p) =>
        p.readOnly === true ? [] : ["root filesystem is writable: set readOnly"],
    ),
    containerPolicy("container-drop-all-capabilities", "Every container drops all Linux capabilities and adds none.", "mandatory", (p) => {
        const drops: string[] = p.capabilities?.drops ?? [];
        const adds: string[] = p.capabilities?.adds ?? [];
        return [...(drops.includes("ALL") ? [] : ["capabilities are not dropped: drop ALL"]), ...(adds.length > 0 ? [`capabilities added: ${adds.join(", ")}`] : [])];
    }),
    containerPolicy("container-no-new-privileges", "Every container runs with no-new-privileges.", "mandatory", (p) =>
        (p.securityOpts ?? []).some((o: string) => o === "no-new-privileges:true" || o === "no-new-privileges") ? [] : ["no-new-privileges is not set"],
    ),
    containerPolicy("container-non-root", "Every container runs as a non-root user.", "mandatory", (p) => {
        const user: string = p.user ?? "";
        if (user === "") return ["no user set: the image's default may be root"];
        return /^(0|root)(:|$)/.test(user) ? [`runs as root (${user})`] : [];
    }),
    containerPolicy("container-own-network", "Every container has its own network namespace: never the host's or another container's.", "mandatory", (p) =>
        p.networkMode === undefined || p.networkMode === "none" ? [] : [`network mode ${p.networkMode}`],
    ),
    containerPolicy("container-not-privileged", "No container is privileged.", "mandatory", (p) => (p.privileged === true ? ["privileged mode is on"] : [])),
    containerPolicy("container-memory-limit", "Every container has a memory limit.", "mandatory", (p) => (typeof p.memory === "number" && p.memory > 0 ? [] : ["no memory limit"])),
    containerPolicy("no-host-path-mounts", "No host path is mounted, except those the container declares allowed.", "mandatory", (p) => {
        const allowed = (labels(p)[EXCEPTION_LABELS.hostPaths] ?? "").split(",").map((s) => s.trim()).filter(Boolean);
        return mountsOf(p)
            .filter((m) => !DOCKER_SOCKETS.includes(m.source) && !allowed.includes(m.source))
            .map((m) => `host path ${m.source} mounted at ${m.target} is not declared allowed`);
    }),
    containerPolicy("docker-socket", "The Docker socket is mounted nowhere, except read-only into a declared socket proxy.", "mandatory", (p) =>
        mountsOf(p)
            .filter((m) => DOCKER_SOCKETS.includes(m.source))
            .filter((m) => !(m.readOnly && labels(p)[LABELS.role] === SOCKET_PROXY_ROLE))
            .map((m) => `Docker socket mounted at ${m.target}${m.readOnly ? "" : " read-write"} into a container that is not a declared socket proxy`),
    ),
    containerPolicy("ports-on-loopback", "Host ports are published on 127.0.0.1, unless the container declares another address.", "mandatory", (p) => {
        const declared = labels(p)[EXCEPTION_LABELS.publishAddress];
        return (p.ports ?? [])
            .filter((port: any) => port.external !== undefined)
            .filter((port: any) => port.ip !== "127.0.0.1" && !(declared !== undefined && port.ip === declared))
            .map((port: any) => `port ${port.external} is published on ${port.ip ?? "0.0.0.0 (every address)"}`);
    }),
    containerPolicy("images-pinned", "Images are pinned: no latest, no missing tag.", "mandatory", (p) =>
        imageIsPinned(String(p.image ?? "")) ? [] : [`image ${p.image} is not pinned to a tag or digest`],
    ),
    containerPolicy("no-provider-keys", "No value shaped like a provider key in any container's env or uploads, except KeyProxy's own key variables.", "mandatory", (p) => {
        const isKeyProxy = labels(p)[LABELS.role] === "key-proxy";
        return envAndUploads(p)
            .filter(({ where }) => !(isKeyProxy && /^env KEYPROXY_KEY_[A-Z]+$/.test(where)))
            .filter(({ value }) => PROVIDER_KEY_SHAPE.test(value))
            .map(({ where }) => `${where} holds a value shaped like a provider API key`);
    }),
    {
        name: "agent-networks-internal",
        description: "Agent networks are internal, and their bridge has no host address.",
        enforcementLevel: "mandatory",
        validate: ({ type, props }) => {
            if (type !== NETWORK || labels(props)[LABELS.agent] === undefined) return [];
            return [
                ...(props.internal === true ? [] : ["agent network is not internal"]),
                ...(props.options?.["com.docker.network.bridge.inhibit_ipv4"] === "true" ? [] : ["agent network's bridge has a host address: set com.docker.network.bridge.inhibit_ipv4"]),
            ];
        },
    },
    containerPolicy("egress-private-ranges", "EgressGateway lets agents reach no private range (the override exists for test stand-ins).", "advisory", (p) => {
        const env = (p.envs ?? []).find((e: string) => e.startsWith("EGRESS_CONFIG="));
        const ranges: string[] = env ? (JSON.parse(env.slice("EGRESS_CONFIG=".length)).allowRanges ?? []) : [];
        return ranges.length > 0 ? [`agents may reach private ranges ${ranges.join(", ")} through the gateway`] : [];
    }),
    containerPolicy("image-digest", "Images are pinned by digest.", "advisory", (p) => (/@sha256:[0-9a-f]{64}$/.test(String(p.image ?? "")) ? [] : [`image ${p.image} is pinned by tag, not digest`])),
    containerPolicy("skill-overrides", "Agents run third-party skills only when clean, or overridden by an admin for that exact content hash; overrides are reported.", "advisory", (p) =>
        (labels(p)[EXCEPTION_LABELS.skillOverrides] ?? "").split(";").map((entry) => entry.trim()).filter(Boolean).map((entry) => `quarantined skill ${entry}`),
    ),
    containerPolicy("healthcheck", "Every long-running container has a healthcheck.", "advisory", (p) =>
        p.attach === true || ((p.healthcheck?.tests ?? []).length > 0 && p.healthcheck.tests[0] !== "NONE") ? [] : ["no healthcheck"],
    ),
    containerPolicy("restart-policy", "Every long-running container has a restart policy.", "advisory", (p) =>
        p.attach === true || (p.restart && p.restart !== "no") ? [] : ["no restart policy"],
    ),
    containerPolicy("log-rotation", "Container logs are rotated.", "advisory", (p) =>
        ["json-file", "local"].includes(p.logDriver ?? "json-file") && !p.logOpts?.["max-size"] ? ["logs are not rotated: set logOpts max-size"] : [],
    ),
];

export interface Verdict {
    policy: string;
    enforcementLevel: EnforcementLevel;
    resource: string;
    message: string;
}

/**
 * Every violation of every policy by these resources. A mandatory violation the container declared as a
 * hardening exception (with its reason) is reported as advisory, with the reason.
 */
export function evaluate(resources: readonly PolicyResource[], policies: readonly OpenClawPolicy[] = POLICIES): Verdict[] {
    const verdicts: Verdict[] = [];
    for (const resource of resources) {
        const exceptions = resource.type === CONTAINER ? declaredExceptions(resource.props) : new Map<string, string>();
        for (const policy of policies) {
            for (const message of policy.validate(resource)) {
                const reason = exceptions.get(policy.name);
                verdicts.push(
                    reason !== undefined && policy.enforcementLevel === "mandatory"
                        ? { policy: policy.name, enforcementLevel: "advisory", resource: resource.name, message: `${message} (declared exception: ${reason})` }
                        : { policy: policy.name, enforcementLevel: policy.enforcementLevel, resource: resource.name, message },
                );
            }
        }
    }
    return verdicts;
}
