// The policies, as plain functions over a resource's type, name and inputs: CrossGuard (index.ts), the offline
// review command and the tests all call these. Exceptions are declared on the resource itself (labels), so they
// show in the preview diff and in every verdict.

import { isPinnedByDigest, isPinnedImage, isRootUser } from "../infra/securityRules";
import { EXCEPTION_LABELS, LABELS } from "../infra/topology";
import { KEY_ENV_NAME, KEY_PREFIX_PATTERN } from "../providers/index";

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
export const NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy";
/** Kubernetes kinds that run pods, and where their pod spec is. */
const POD_SPEC_PATHS: Record<string, string[]> = {
    "kubernetes:core/v1:Pod": ["spec"],
    "kubernetes:apps/v1:Deployment": ["spec", "template", "spec"],
    "kubernetes:apps/v1:StatefulSet": ["spec", "template", "spec"],
    "kubernetes:apps/v1:DaemonSet": ["spec", "template", "spec"],
    "kubernetes:apps/v1:ReplicaSet": ["spec", "template", "spec"],
    "kubernetes:batch/v1:Job": ["spec", "template", "spec"],
    "kubernetes:batch/v1:CronJob": ["spec", "jobTemplate", "spec", "template", "spec"],
};
/** Kubernetes kinds whose data could carry a key. */
const K8S_DATA_KINDS = ["kubernetes:core/v1:Secret", "kubernetes:core/v1:SecretPatch", "kubernetes:core/v1:ConfigMap", "kubernetes:core/v1:ConfigMapPatch"];


const DOCKER_SOCKETS = ["/var/run/docker.sock", "/run/docker.sock"];
const SOCKET_PROXY_ROLE = "socket-proxy";
/** Shaped like a real key of a provider in the registry (providers/<id>.ts keyPrefixes). */
export const PROVIDER_KEY_SHAPE = new RegExp(`(?:${KEY_PREFIX_PATTERN})[A-Za-z0-9_-]{20,}`);

function labels(props: Record<string, any>): Record<string, string> {
    if (!Array.isArray(props.labels)) return props.metadata?.labels ?? {};
    const list: { label: string; value: string }[] = props.labels;
    return Object.fromEntries(list.map((l) => [l.label, l.value]));
}

/** The pod spec of a Kubernetes workload, or undefined for any other resource. */
export function podSpecOf(resource: { type: string; props: Record<string, any> }): Record<string, any> | undefined {
    const path = POD_SPEC_PATHS[resource.type];
    return path?.reduce<any>((node, key) => node?.[key], resource.props);
}

/** Every container of a pod spec (init and ephemeral too), with the pod's security context as their default. */
function podContainers(pod: Record<string, any>): { name: string; container: Record<string, any>; security: Record<string, any> }[] {
    const all = [...(pod.initContainers ?? []), ...(pod.containers ?? []), ...(pod.ephemeralContainers ?? [])];
    return all.map((container) => ({ name: container.name ?? "?", container, security: { ...(pod.securityContext ?? {}), ...(container.securityContext ?? {}) } }));
}

/** A policy over each container of a Kubernetes workload; messages name the container. */
const podPolicy = (name: string, description: string, enforcementLevel: EnforcementLevel, check: (container: Record<string, any>, security: Record<string, any>, pod: Record<string, any>) => string[]): OpenClawPolicy => ({
    name,
    description,
    enforcementLevel,
    validate: (resource) => {
        const pod = podSpecOf(resource);
        if (!pod) return [];
        return podContainers(pod).flatMap(({ name: container, container: spec, security }) => check(spec, security, pod).map((message) => `container ${container}: ${message}`));
    },
});

/** A rule about the pod as a whole: reported once per workload. */
const wholePodPolicy = (name: string, description: string, check: (pod: Record<string, any>) => string[]): OpenClawPolicy => ({
    name,
    description,
    enforcementLevel: "mandatory",
    validate: (resource) => {
        const pod = podSpecOf(resource);
        return pod ? check(pod) : [];
    },
});

/** Env values and data entries of Kubernetes objects, with where they are. */
function k8sValues(resource: PolicyResource): { where: string; value: string }[] {
    const pod = podSpecOf(resource);
    if (pod) {
        return podContainers(pod).flatMap(({ name, container }) =>
            (container.env ?? []).filter((e: any) => typeof e.value === "string").map((e: any) => ({ where: `container ${name} env ${e.name}`, value: e.value })),
        );
    }
    if (!K8S_DATA_KINDS.includes(resource.type)) return [];
    // A Secret's data is base64; a ConfigMap's is plain text.
    const base64 = resource.type.includes("/v1:Secret");
    const decoded = Object.entries<string>(resource.props.data ?? {}).map(([key, value]) => ({ where: `data ${key}`, value: base64 ? Buffer.from(String(value), "base64").toString("utf8") : String(value) }));
    const plain = Object.entries<string>(resource.props.stringData ?? {}).map(([key, value]) => ({ where: `stringData ${key}`, value: String(value) }));
    return [...decoded, ...plain];
}

/**
 * Policies a container or a Kubernetes workload declared it cannot meet, with the reason (a Docker label, a
 * Kubernetes annotation); those are reported as advisory instead.
 */
export function declaredExceptions(props: Record<string, any>): Map<string, string> {
    const raw = labels(props)[EXCEPTION_LABELS.hardeningExceptions] ?? props.metadata?.annotations?.[EXCEPTION_LABELS.hardeningExceptions] ?? "";
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
        return isRootUser(user) ? [`runs as root (${user})`] : [];
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
        isPinnedImage(String(p.image ?? "")) ? [] : [`image ${p.image} is not pinned to a tag or digest`],
    ),
    containerPolicy("no-provider-keys", "No value shaped like a provider key in any container's env or uploads, except KeyProxy's own key variables.", "mandatory", (p) => {
        const isKeyProxy = labels(p)[LABELS.role] === "key-proxy";
        return envAndUploads(p)
            .filter(({ where }) => !(isKeyProxy && where.startsWith("env ") && KEY_ENV_NAME.test(where.slice(4))))
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
    podPolicy("k8s-read-only-root", "Every Kubernetes container has a read-only root filesystem.", "mandatory", (_c, s) =>
        s.readOnlyRootFilesystem === true ? [] : ["root filesystem is writable: set readOnlyRootFilesystem"],
    ),
    podPolicy("k8s-drop-all-capabilities", "Every Kubernetes container drops all capabilities and adds none.", "mandatory", (_c, s) => {
        const drop: string[] = s.capabilities?.drop ?? [];
        const add: string[] = s.capabilities?.add ?? [];
        return [...(drop.includes("ALL") ? [] : ["capabilities are not dropped: drop ALL"]), ...(add.length > 0 ? [`capabilities added: ${add.join(", ")}`] : [])];
    }),
    podPolicy("k8s-no-privilege-escalation", "Every Kubernetes container sets allowPrivilegeEscalation: false.", "mandatory", (_c, s) =>
        s.allowPrivilegeEscalation === false ? [] : ["allowPrivilegeEscalation is not false"],
    ),
    podPolicy("k8s-non-root", "Every Kubernetes container runs as a numeric non-root user.", "mandatory", (_c, s) => [
        ...(s.runAsNonRoot === true ? [] : ["runAsNonRoot is not set"]),
        ...(Number.isInteger(s.runAsUser) && s.runAsUser > 0 ? [] : [`runAsUser must be a numeric non-root uid, got ${s.runAsUser ?? "none (the image's default)"}`]),
    ]),
    podPolicy("k8s-not-privileged", "No Kubernetes container is privileged.", "mandatory", (_c, s) => (s.privileged === true ? ["privileged mode is on"] : [])),
    podPolicy("k8s-seccomp", "Every Kubernetes container runs under the runtime's default seccomp profile (or a local one).", "mandatory", (_c, s) =>
        ["RuntimeDefault", "Localhost"].includes(s.seccompProfile?.type) ? [] : [`seccomp profile is ${s.seccompProfile?.type ?? "unset (Unconfined on many runtimes)"}`],
    ),
    podPolicy("k8s-limits", "Every Kubernetes container has memory and CPU limits.", "mandatory", (c) => [
        ...(c.resources?.limits?.memory ? [] : ["no memory limit"]),
        ...(c.resources?.limits?.cpu ? [] : ["no cpu limit"]),
    ]),
    podPolicy("k8s-images-pinned", "Kubernetes images are pinned: no latest, no missing tag.", "mandatory", (c) => (isPinnedImage(String(c.image ?? "")) ? [] : [`image ${c.image} is not pinned to a tag or digest`])),
    podPolicy("k8s-no-host-ports", "No Kubernetes container takes a host port.", "mandatory", (c) =>
        (c.ports ?? []).filter((p: any) => p.hostPort !== undefined).map((p: any) => `host port ${p.hostPort} is taken`),
    ),
    wholePodPolicy("k8s-no-host-access", "No pod shares the node's network, PID or IPC namespace, or mounts a host path.", (pod) => [
        ...(["hostNetwork", "hostPID", "hostIPC"] as const).filter((key) => pod[key] === true).map((key) => `${key} is on`),
        ...(pod.volumes ?? []).filter((v: any) => v.hostPath).map((v: any) => `host path ${v.hostPath.path} is mounted (volume ${v.name})`),
    ]),
    wholePodPolicy("k8s-no-api-token", "No pod gets a Kubernetes API token (automountServiceAccountToken: false).", (pod) =>
        pod.automountServiceAccountToken === false ? [] : ["the service account token is mounted: set automountServiceAccountToken: false"],
    ),
    {
        name: "k8s-no-provider-keys",
        description: "No value shaped like a provider key in any Kubernetes env, Secret or ConfigMap, except KeyProxy's keys Secret.",
        enforcementLevel: "mandatory",
        validate: (resource) => {
            const keyProxyKeys = resource.type === "kubernetes:core/v1:Secret" && labels(resource.props)[LABELS.role] === "key-proxy";
            return k8sValues(resource)
                .filter(({ where }) => !(keyProxyKeys && KEY_ENV_NAME.test(where.slice(where.indexOf(" ") + 1)) && /^(data|stringData) /.test(where)))
                .filter(({ value }) => PROVIDER_KEY_SHAPE.test(value))
                .map(({ where }) => `${where} holds a value shaped like a provider API key`);
        },
    },
    podPolicy("k8s-probes", "Every Kubernetes container has a liveness probe.", "advisory", (c) => (c.livenessProbe ? [] : ["no liveness probe"])),
    containerPolicy("egress-private-ranges", "EgressGateway lets agents reach no private range (the override exists for test stand-ins).", "advisory", (p) => {
        const env = (p.envs ?? []).find((e: string) => e.startsWith("EGRESS_CONFIG="));
        const ranges: string[] = env ? (JSON.parse(env.slice("EGRESS_CONFIG=".length)).allowRanges ?? []) : [];
        return ranges.length > 0 ? [`agents may reach private ranges ${ranges.join(", ")} through the gateway`] : [];
    }),
    containerPolicy("image-digest", "Images are pinned by digest.", "advisory", (p) => (isPinnedByDigest(String(p.image ?? "")) ? [] : [`image ${p.image} is pinned by tag, not digest`])),
    containerPolicy("skill-overrides", "Agents run third-party skills only when clean, or overridden by an admin for that exact content hash; overrides are reported.", "advisory", (p) =>
        (labels(p)[EXCEPTION_LABELS.skillOverrides] ?? "").split(";").map((entry) => entry.trim()).filter(Boolean).map((entry) => `quarantined skill ${entry}`),
    ),
    containerPolicy("ingress-operator-certificate", "The Ingress's listener certificate comes from the stack's own CA; an operator-supplied one is reported (its renewal is the operator's).", "advisory", (p) =>
        labels(p)[LABELS.ingressTls] === "operator-certificate" ? ["serves an operator-supplied certificate (ingress.certificate): renewing it before it expires is the operator's"] : [],
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

/** A rule about the stack as a whole: CrossGuard's validateStack, and the offline review. */
export interface OpenClawStackPolicy {
    name: string;
    description: string;
    enforcementLevel: EnforcementLevel;
    validateStack(resources: readonly PolicyResource[]): string[];
}

/** A NetworkPolicy that selects every pod of its namespace and admits nothing, either way. */
export function isDefaultDeny(props: Record<string, any>): boolean {
    const spec = props.spec ?? {};
    const selectsAll = Object.keys(spec.podSelector?.matchLabels ?? {}).length === 0 && (spec.podSelector?.matchExpressions ?? []).length === 0;
    const types: string[] = spec.policyTypes ?? [];
    return selectsAll && types.includes("Ingress") && types.includes("Egress") && (spec.ingress ?? []).length === 0 && (spec.egress ?? []).length === 0;
}

export const STACK_POLICIES: OpenClawStackPolicy[] = [
    {
        name: "k8s-namespace-default-deny",
        description: "Every namespace that runs a workload of the stack denies all traffic by default (a NetworkPolicy with an empty pod selector and no rules).",
        enforcementLevel: "mandatory",
        validateStack: (resources) => {
            const guarded = new Set(resources.filter((r) => r.type === NETWORK_POLICY && isDefaultDeny(r.props)).map((r) => r.props.metadata?.namespace));
            const running = new Set(resources.filter((r) => podSpecOf(r) !== undefined).map((r) => r.props.metadata?.namespace));
            return [...running].filter((namespace) => !guarded.has(namespace)).map((namespace) => `namespace ${namespace ?? "(default)"} has no default-deny NetworkPolicy`);
        },
    },
];

/** Containers and Kubernetes workloads may declare hardening exceptions; nothing else may. */
export function mayDeclareExceptions(resource: { type: string; props: Record<string, any> }): boolean {
    return resource.type === CONTAINER || podSpecOf(resource) !== undefined;
}

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
export function evaluate(resources: readonly PolicyResource[], policies: readonly OpenClawPolicy[] = POLICIES, stackPolicies: readonly OpenClawStackPolicy[] = STACK_POLICIES): Verdict[] {
    const verdicts: Verdict[] = [];
    for (const resource of resources) {
        const exceptions = mayDeclareExceptions(resource) ? declaredExceptions(resource.props) : new Map<string, string>();
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
    for (const policy of stackPolicies) {
        for (const message of policy.validateStack(resources)) verdicts.push({ policy: policy.name, enforcementLevel: policy.enforcementLevel, resource: "(stack)", message });
    }
    return verdicts;
}
