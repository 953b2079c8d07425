import { beforeAll, describe, expect, it } from "vitest";
import { CONTAINER, NETWORK, NETWORK_POLICY, POLICIES, type PolicyResource, STACK_POLICIES, evaluate } from "../policy/policies";
import { type RecordedResource, TYPES, devConfig, reveal, runProgram } from "./support/mockStack";
import { fakeKey } from "./support/fakeKeys";

/** A container that meets every policy; each failing fixture breaks exactly one thing. */
const good = (): Record<string, any> => ({
    name: "c",
    image: "ghcr.io/openclaw/openclaw:2026.11.1",
    user: "1000:1000",
    readOnly: true,
    privileged: false,
    capabilities: { drops: ["ALL"] },
    securityOpts: ["no-new-privileges:true"],
    memory: 512,
    restart: "unless-stopped",
    logDriver: "json-file",
    logOpts: { "max-size": "10m" },
    healthcheck: { tests: ["CMD", "true"] },
    ports: [{ internal: 18789, external: 18801, ip: "127.0.0.1" }],
    envs: ["ANTHROPIC_API_KEY=ocp_agentcredential"],
    labels: [{ label: "openclaw.role", value: "agent" }],
});
const container = (change: (p: Record<string, any>) => void = () => undefined): PolicyResource => {
    const props = good();
    change(props);
    return { type: CONTAINER, name: "c", props };
};
const agentNetwork = (change: (p: Record<string, any>) => void = () => undefined): PolicyResource => {
    const props: Record<string, any> = { internal: true, options: { "com.docker.network.bridge.inhibit_ipv4": "true" }, labels: [{ label: "openclaw.agent", value: "bart" }] };
    change(props);
    return { type: NETWORK, name: "n", props };
};
const KEY = fakeKey("anthropic", "abcdefghijklmnopqrstuvwxyz0123456789");

/** A Kubernetes Deployment whose pod meets every policy; each failing fixture breaks exactly one thing. */
const DEPLOYMENT = "kubernetes:apps/v1:Deployment";
const workload = (change: (pod: Record<string, any>, container: Record<string, any>, props: Record<string, any>) => void = () => undefined, type = DEPLOYMENT): PolicyResource => {
    const container: Record<string, any> = {
        name: "main",
        image: "openclaw-key-proxy:0.1.0",
        env: [{ name: "KEYPROXY_CONFIG", valueFrom: { secretKeyRef: { name: "key-proxy-config", key: "config" } } }],
        resources: { limits: { memory: "512Mi", cpu: "1000m" } },
        securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, privileged: false, capabilities: { drop: ["ALL"] }, runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: "RuntimeDefault" } },
        livenessProbe: { exec: { command: ["true"] } },
    };
    const pod: Record<string, any> = { automountServiceAccountToken: false, containers: [container], volumes: [{ name: "tmp", emptyDir: { medium: "Memory" } }] };
    const props: Record<string, any> = { metadata: { name: "w", namespace: "openclaw-dev", labels: { "openclaw.role": "key-proxy" } }, spec: { template: { spec: pod } } };
    change(pod, container, props);
    return { type, name: "w", props };
};
const secret = (labels: Record<string, string>, stringData: Record<string, string>): PolicyResource => ({ type: "kubernetes:core/v1:Secret", name: "s", props: { metadata: { name: "s", labels }, stringData } });

const FIXTURES: Record<string, [pass: PolicyResource, fail: PolicyResource, message: RegExp]> = {
    "container-read-only": [container(), container((p) => (p.readOnly = false)), /writable/],
    "container-drop-all-capabilities": [container(), container((p) => (p.capabilities = { drops: ["ALL"], adds: ["NET_ADMIN"] })), /added: NET_ADMIN/],
    "container-no-new-privileges": [container(), container((p) => (p.securityOpts = [])), /no-new-privileges/],
    "container-non-root": [container(), container((p) => (p.user = "0:0")), /root/],
    "container-not-privileged": [container(), container((p) => (p.privileged = true)), /privileged/],
    "container-own-network": [container((p) => (p.networkMode = "none")), container((p) => (p.networkMode = "host")), /network mode host/],
    "container-memory-limit": [container(), container((p) => delete p.memory), /memory/],
    "no-host-path-mounts": [
        container((p) => {
            p.volumes = [{ hostPath: "/srv/shared", containerPath: "/shared" }];
            p.labels.push({ label: "openclaw.allowed-host-paths", value: "/srv/shared" });
        }),
        container((p) => (p.volumes = [{ hostPath: "/etc", containerPath: "/host-etc" }])),
        /host path \/etc/,
    ],
    "docker-socket": [
        container((p) => {
            p.mounts = [{ type: "bind", source: "/var/run/docker.sock", target: "/var/run/docker.sock", readOnly: true }];
            p.labels = [{ label: "openclaw.role", value: "socket-proxy" }];
        }),
        container((p) => (p.mounts = [{ type: "bind", source: "/var/run/docker.sock", target: "/var/run/docker.sock", readOnly: true }])),
        /Docker socket/,
    ],
    "ports-on-loopback": [
        container((p) => {
            p.ports = [{ internal: 1, external: 2000, ip: "10.0.0.5" }];
            p.labels.push({ label: "openclaw.publish-address", value: "10.0.0.5" });
        }),
        container((p) => (p.ports = [{ internal: 1, external: 2000 }])),
        /every address/,
    ],
    "images-pinned": [container(), container((p) => (p.image = "openclaw/openclaw:latest")), /not pinned/],
    "no-provider-keys": [
        container((p) => {
            p.envs = [`KEYPROXY_KEY_ANTHROPIC=${KEY}`];
            p.labels = [{ label: "openclaw.role", value: "key-proxy" }];
        }),
        container((p) => (p.uploads = [{ file: "/home/node/.openclaw/openclaw.json", content: `{"apiKey":"${KEY}"}` }])),
        /upload .* provider API key/,
    ],
    "agent-networks-internal": [agentNetwork(), agentNetwork((p) => (p.options = {})), /host address/],
    "egress-private-ranges": [
        container((p) => (p.envs = ['EGRESS_CONFIG={"listen":{"port":3128}}'])),
        container((p) => (p.envs = ['EGRESS_CONFIG={"allowRanges":["172.16.0.0/12"]}'])),
        /private ranges 172\.16\.0\.0\/12/,
    ],
    "k8s-read-only-root": [workload(), workload((_p, c) => (c.securityContext.readOnlyRootFilesystem = false)), /container main: root filesystem is writable/],
    "k8s-drop-all-capabilities": [workload(), workload((_p, c) => (c.securityContext.capabilities = { drop: ["ALL"], add: ["NET_RAW"] })), /added: NET_RAW/],
    "k8s-no-privilege-escalation": [workload(), workload((_p, c) => delete c.securityContext.allowPrivilegeEscalation), /allowPrivilegeEscalation/],
    "k8s-non-root": [
        // The pod's security context is every container's default.
        workload((p, c) => {
            delete c.securityContext.runAsUser;
            p.securityContext = { runAsUser: 1000 };
        }),
        workload((_p, c) => (c.securityContext.runAsUser = 0)),
        /numeric non-root uid, got 0/,
    ],
    "k8s-not-privileged": [workload(), workload((_p, c) => (c.securityContext.privileged = true)), /privileged/],
    "k8s-seccomp": [workload(), workload((_p, c) => (c.securityContext.seccompProfile = { type: "Unconfined" })), /seccomp profile is Unconfined/],
    "k8s-limits": [workload(), workload((_p, c) => delete c.resources.limits.memory), /no memory limit/],
    "k8s-images-pinned": [workload(), workload((_p, c) => (c.image = "openclaw/openclaw:latest")), /not pinned/],
    "k8s-no-host-ports": [workload(), workload((_p, c) => (c.ports = [{ containerPort: 8080, hostPort: 8080 }])), /host port 8080/],
    "k8s-no-host-access": [workload(), workload((p) => p.volumes.push({ name: "root", hostPath: { path: "/" } })), /host path \/ is mounted/],
    "k8s-no-api-token": [workload(), workload((p) => delete p.automountServiceAccountToken), /automountServiceAccountToken/],
    "k8s-no-provider-keys": [
        secret({ "openclaw.role": "key-proxy" }, { KEYPROXY_KEY_ANTHROPIC: KEY }),
        workload((_p, c) => c.env.push({ name: "ANTHROPIC_API_KEY", value: KEY })),
        /container main env ANTHROPIC_API_KEY holds a value shaped like a provider API key/,
    ],
    "k8s-probes": [workload(), workload((_p, c) => delete c.livenessProbe), /no liveness probe/],
    "image-digest": [container((p) => (p.image = `openclaw@sha256:${"a".repeat(64)}`)), container(), /not digest/],
    "ingress-operator-certificate": [
        container((p) => p.labels.push({ label: "openclaw.ingress-tls", value: "own-ca" })),
        container((p) => p.labels.push({ label: "openclaw.ingress-tls", value: "operator-certificate" })),
        /serves an operator-supplied certificate/,
    ],
    healthcheck: [container(), container((p) => delete p.healthcheck), /no healthcheck/],
    "restart-policy": [container(), container((p) => (p.restart = "no")), /restart/],
    "log-rotation": [container(), container((p) => delete p.logOpts), /not rotated/],
    "skill-overrides": [
        container((p) => p.labels.push({ label: "openclaw.skills", value: "notes@0123456789abcdef clean" })),
        container((p) => p.labels.push({ label: "openclaw.skill-overrides", value: 'runner@0123456789abcdef: overridden by ann at 2026-01-02T03:04:05.000Z ("I accept the risk") despite exec-eval index.js:3' })),
        /quarantined skill runner@0123456789abcdef: overridden by ann .* despite exec-eval index\.js:3/,
    ],
};

describe.each(POLICIES.map((p) => [p.name, p] as const))("policy %s", (name, policy) => {
    it("has a passing and a failing fixture", () => expect(FIXTURES[name]).toBeDefined());

    it("passes its passing fixture", () => expect(policy.validate(FIXTURES[name][0])).toEqual([]));

    it("fails its failing fixture, saying why", () => {
        const messages = policy.validate(FIXTURES[name][1]);
        expect(messages.length).toBeGreaterThan(0);
        expect(messages.join("\n")).toMatch(FIXTURES[name][2]);
    });
});

describe("more failing cases", () => {
    const violations = (policy: string, resource: PolicyResource) => POLICIES.find((p) => p.name === policy)!.validate(resource);

    it.each([
        ["no user at all", container((p) => delete p.user), "container-non-root"],
        ["root by name", container((p) => (p.user = "root")), "container-non-root"],
        ["root by name, with a group", container((p) => (p.user = "root:1000")), "container-non-root"],
        ["root by uid with a leading zero", container((p) => (p.user = "00:1000")), "container-non-root"],
        ["root by uid written 000, alone", container((p) => (p.user = "000")), "container-non-root"],
        ["capabilities never dropped", container((p) => delete p.capabilities), "container-drop-all-capabilities"],
        ["a read-write socket into a declared proxy", container((p) => { p.mounts = [{ type: "bind", source: "/run/docker.sock", target: "/s", readOnly: false }]; p.labels = [{ label: "openclaw.role", value: "socket-proxy" }]; }), "docker-socket"],
        ["a port on a declared address other than the one used", container((p) => { p.ports = [{ internal: 1, external: 2000, ip: "10.0.0.6" }]; p.labels.push({ label: "openclaw.publish-address", value: "10.0.0.5" }); }), "ports-on-loopback"],
        ["an untagged image", container((p) => (p.image = "openclaw/openclaw")), "images-pinned"],
        ["a tag Docker cannot parse (the config refuses it too)", container((p) => (p.image = "openclaw/openclaw:latest@")), "images-pinned"],
        ["a Kubernetes image with an empty tag", workload((_p, c) => (c.image = "openclaw/openclaw:")), "k8s-images-pinned"],
        ["a key in an agent's env", container((p) => (p.envs = [`ANTHROPIC_API_KEY=${KEY}`])), "no-provider-keys"],
        ["a key in KeyProxy's env under another name", container((p) => { p.envs = [`DEBUG=${KEY}`]; p.labels = [{ label: "openclaw.role", value: "key-proxy" }]; }), "no-provider-keys"],
        ["an OpenAI project key", container((p) => (p.envs = [`X=${fakeKey("openai", "abcdefghijklmnopqrstuvwxyz0123")}`])), "no-provider-keys"],
        ["an agent network that is not internal", agentNetwork((p) => (p.internal = false)), "agent-networks-internal"],
        ["a writable root in an init container", workload((p) => (p.initContainers = [{ name: "init", securityContext: {} }])), "k8s-read-only-root"],
        ["a StatefulSet's container that escalates", workload((_p, c) => (c.securityContext.allowPrivilegeEscalation = true), "kubernetes:apps/v1:StatefulSet"), "k8s-no-privilege-escalation"],
        ["a CronJob's pod on the node's network", { type: "kubernetes:batch/v1:CronJob", name: "j", props: { spec: { jobTemplate: { spec: { template: { spec: { hostNetwork: true, containers: [] } } } } } } }, "k8s-no-host-access"],
        ["no user anywhere", workload((_p, c) => delete c.securityContext.runAsUser), "k8s-non-root"],
        ["a key in a ConfigMap", { type: "kubernetes:core/v1:ConfigMap", name: "m", props: { data: { "openclaw.json": `{"apiKey":"${KEY}"}` } } }, "k8s-no-provider-keys"],
        ["a base64 key in an agent's config Secret", { type: "kubernetes:core/v1:Secret", name: "s", props: { metadata: { labels: { "openclaw.role": "agent" } }, data: { "openclaw.json": Buffer.from(KEY).toString("base64") } } }, "k8s-no-provider-keys"],
        ["a key in KeyProxy's config Secret", secret({ "openclaw.role": "key-proxy" }, { config: `{"key":"${KEY}"}` }), "k8s-no-provider-keys"],
        ["a key in a registry patch", { type: "kubernetes:core/v1:SecretPatch", name: "p", props: { data: { "bart.json": Buffer.from(KEY).toString("base64") } } }, "k8s-no-provider-keys"],
    ])("%s", (_case, resource, policy) => expect(violations(policy, resource).length).toBeGreaterThan(0));
});

describe("stack policy k8s-namespace-default-deny", () => {
    const policy = STACK_POLICIES.find((p) => p.name === "k8s-namespace-default-deny")!;
    const networkPolicy = (spec: Record<string, any>, namespace = "openclaw-dev"): PolicyResource => ({ type: NETWORK_POLICY, name: "np", props: { metadata: { name: "np", namespace }, spec } });
    const DENY = { podSelector: {}, policyTypes: ["Ingress", "Egress"], ingress: [], egress: [] };

    it("passes a namespace whose workloads sit behind a default deny", () => expect(policy.validateStack([workload(), networkPolicy(DENY)])).toEqual([]));

    it.each([
        ["no NetworkPolicy at all", []],
        ["a deny in another namespace", [networkPolicy(DENY, "elsewhere")]],
        ["a deny of ingress only", [networkPolicy({ ...DENY, policyTypes: ["Ingress"] })]],
        ["a 'deny' that selects only some pods", [networkPolicy({ ...DENY, podSelector: { matchLabels: { "openclaw.role": "agent" } } })]],
        ["a 'deny' with an allow rule", [networkPolicy({ ...DENY, egress: [{}] })]],
    ])("fails with %s", (_case, policies) => {
        expect(policy.validateStack([workload(), ...policies])).toEqual(["namespace openclaw-dev has no default-deny NetworkPolicy"]);
    });
});

describe("evaluate", () => {
    it("reports a declared hardening exception as advisory, with its reason", () => {
        const monitoring = container((p) => {
            p.readOnly = false;
            p.labels.push({ label: "openclaw.hardening-exceptions", value: "container-read-only: the image writes to /usr/share at start" });
        });
        expect(evaluate([monitoring])).toEqual([
            { policy: "container-read-only", enforcementLevel: "advisory", resource: "c", message: "root filesystem is writable: set readOnly (declared exception: the image writes to /usr/share at start)" },
            { policy: "image-digest", enforcementLevel: "advisory", resource: "c", message: expect.stringContaining("not digest") },
        ]);
    });

    it("keeps undeclared violations mandatory", () => {
        expect(evaluate([container((p) => (p.privileged = true))]).map((v) => [v.policy, v.enforcementLevel])).toContainEqual(["container-not-privileged", "mandatory"]);
    });
});

describe("the project's own stacks", () => {
    let dev: RecordedResource[];
    beforeAll(async () => {
        dev = await runProgram(devConfig());
    });
    const asPolicyResources = (resources: RecordedResource[]) =>
        resources.filter((r) => r.type === TYPES.container || r.type === TYPES.network).map((r) => ({ type: r.type, name: r.name, props: reveal(r.inputs) }));

    it("the dev stack passes every mandatory policy", () => {
        const resources = asPolicyResources(dev);
        // Four services, two one-shot config writers, three networks.
        expect(resources.length).toBe(9);
        expect(evaluate(resources).filter((v) => v.enforcementLevel === "mandatory")).toEqual([]);
    });

    it("the Kubernetes dev stack passes every mandatory policy, the stack-wide ones too", async () => {
        const resources = (await runProgram({ ...devConfig(), backend: "kubernetes" })).filter((r) => r.type.startsWith("kubernetes:")).map((r) => ({ type: r.type, name: r.name, props: reveal(r.inputs) }));
        expect(resources.length).toBeGreaterThan(20);
        expect(evaluate(resources).filter((v) => v.enforcementLevel === "mandatory")).toEqual([]);
        expect(evaluate(resources.filter((r) => r.name !== "default-deny")).filter((v) => v.enforcementLevel === "mandatory").map((v) => v.policy)).toEqual(["k8s-namespace-default-deny"]);
    });

    it.each<[string, boolean, string[]]>([
        ["a one-shot job the provider waits for", true, []],
        ["a long-running container", false, ["healthcheck", "restart-policy"]],
    ])("without a restart policy or healthcheck, %s is reported for: %j", (_what, attach, policies) => {
        const job = container((p) => Object.assign(p, { attach, restart: "no", healthcheck: { tests: ["NONE"] } }));
        expect(evaluate([job]).map((v) => v.policy).filter((name) => ["healthcheck", "restart-policy"].includes(name))).toEqual(policies);
    });

    it("a stack with an Ingress passes every mandatory policy, the Ingress's container with it", async () => {
        const resources = asPolicyResources(await runProgram({ ...devConfig(), ingress: { users: [{ name: "ann", agents: ["bart"] }] } }));
        expect(resources.map((r) => r.props.name)).toContain("openclaw-dev-ingress");
        expect(evaluate(resources).filter((v) => v.enforcementLevel === "mandatory")).toEqual([]);
    });

    it("a stack that opts into another publish address publishes no agent port on it, and passes", async () => {
        const opted = asPolicyResources(await runProgram({ ...devConfig(), network: { publishAddress: "10.20.30.40" } }));
        expect(evaluate(opted).filter((v) => v.enforcementLevel === "mandatory")).toEqual([]);
        const containers = opted.filter((r) => r.type === TYPES.container);
        expect(containers.flatMap((r) => r.props.ports ?? [])).toEqual([]);
        for (const c of containers) expect(c.props.labels.map((l: { label: string }) => l.label)).not.toContain("openclaw.publish-address");
    });
});
