// The Kubernetes backend under Pulumi mocks: the dev stack's own config with `backend: kubernetes`.
import { createHash } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { agentEntrySchema, ownPorts as keyProxyOwnPorts, runtimeConfigSchema } from "../proxy-image/src/config";
import { egressAgentSchema, egressConfigSchema, ownPorts as egressOwnPorts } from "../egress-image/src/config";
import { ConfigError, parseStackConfig } from "../infra/config";
import { FAKE_SECRETS, type RecordedResource, devConfig, reveal, runProgram } from "./support/mockStack";
import { type Endpoint, type Policy, allowed } from "./support/networkPolicy";
import { validateManifest } from "./support/kubernetesSchema";

const kubernetesConfig = (extra: Record<string, unknown> = {}) => ({ ...devConfig(), backend: "kubernetes", ...extra });
const HOMER = { name: "homer", dashboardPort: 18803, model: "anthropic/claude-sonnet-4-5", budget: { dailyUsd: 1 }, egress: { allow: ["example.org"] } };

let dev: RecordedResource[];
let withHomer: RecordedResource[];
let monitored: RecordedResource[];
beforeAll(async () => {
    dev = await runProgram(kubernetesConfig());
    withHomer = await runProgram(kubernetesConfig({ agents: [...(devConfig().agents as object[]), HOMER] }));
    monitored = await runProgram(kubernetesConfig({ kubernetes: { monitoringNamespace: "monitoring", runtimeClassName: "gvisor" } }));
});

const K = (kind: string) => `kubernetes:${kind}`;
const byKind = (resources: RecordedResource[], kind: string) => resources.filter((r) => r.type === K(kind));
const inputsOf = (resources: RecordedResource[], kind: string, name: string) => reveal(byKind(resources, kind).find((r) => r.name === name)!.inputs);
const workloads = (resources: RecordedResource[]) => [...byKind(resources, "apps/v1:StatefulSet"), ...byKind(resources, "apps/v1:Deployment")];

const perAgent = (agent: string) => [
    ["openclaw:kubernetes:AgentSandbox", `agent-${agent}`],
    ["random:index/randomPassword:RandomPassword", `agent-${agent}-credential`],
    ["random:index/randomPassword:RandomPassword", `agent-${agent}-dashboard-token`],
    [K("core/v1:Secret"), `agent-${agent}-config`],
    [K("apps/v1:StatefulSet"), `agent-${agent}`],
    [K("networking.k8s.io/v1:NetworkPolicy"), `agent-${agent}-network`],
    [K("core/v1:Service"), `key-proxy-${agent}`],
    [K("networking.k8s.io/v1:NetworkPolicy"), `key-proxy-from-${agent}`],
    [K("core/v1:SecretPatch"), `key-proxy-register-${agent}`],
    [K("core/v1:Service"), `egress-gateway-${agent}`],
    [K("networking.k8s.io/v1:NetworkPolicy"), `egress-gateway-from-${agent}`],
    [K("core/v1:SecretPatch"), `egress-gateway-register-${agent}`],
];
const STACK_RESOURCES = [
    ["pulumi:providers:kubernetes", "cluster"],
    [K("core/v1:Namespace"), "namespace"],
    [K("networking.k8s.io/v1:NetworkPolicy"), "default-deny"],
    [K("networking.k8s.io/v1:NetworkPolicy"), "egress-dns-from-agents"],
    [K("networking.k8s.io/v1:NetworkPolicy"), "services-egress"],
    ["openclaw:kubernetes:KeyProxy", "key-proxy"],
    [K("core/v1:Secret"), "key-proxy-keys"],
    [K("core/v1:Secret"), "key-proxy-config"],
    [K("core/v1:Secret"), "key-proxy-registry"],
    [K("core/v1:PersistentVolumeClaim"), "key-proxy-data"],
    [K("apps/v1:Deployment"), "key-proxy"],
    ["openclaw:kubernetes:EgressGateway", "egress-gateway"],
    [K("core/v1:Secret"), "egress-gateway-config"],
    [K("core/v1:Secret"), "egress-gateway-registry"],
    [K("core/v1:PersistentVolumeClaim"), "egress-gateway-data"],
    [K("core/v1:Service"), "egress-gateway-dns"],
    [K("apps/v1:Deployment"), "egress-gateway"],
];
const sorted = (list: string[][]) => list.map(([type, name]) => `${type} ${name}`).sort();

describe("the Kubernetes dev stack", () => {
    it("declares exactly the stack's resources and each agent's", () => {
        expect(dev.map((r) => `${r.type} ${r.name}`).sort()).toEqual(sorted([...STACK_RESOURCES, ...perAgent("bart"), ...perAgent("lisa")]));
    });

    it("puts everything in its own namespace, which enforces the restricted Pod Security profile", () => {
        const namespace = inputsOf(dev, "core/v1:Namespace", "namespace");
        expect(namespace.metadata.name).toBe("openclaw-dev");
        expect(namespace.metadata.labels).toMatchObject({ "pod-security.kubernetes.io/enforce": "restricted" });
        for (const r of dev.filter((r) => r.type.startsWith("kubernetes:") && r.type !== K("core/v1:Namespace"))) expect(reveal(r.inputs).metadata.namespace).toBe("openclaw-dev");
    });

    it.each(["default", "with a monitoring namespace and a RuntimeClass"])("every manifest validates against the Kubernetes OpenAPI schema (%s)", (variant) => {
        const resources = variant === "default" ? dev : monitored;
        const manifests = resources.filter((r) => r.type.startsWith("kubernetes:"));
        expect(manifests.length).toBeGreaterThan(20);
        for (const r of manifests) expect(validateManifest(r.type, reveal(r.inputs)), `${r.type} ${r.name}`).toEqual([]);
    });
});

describe("every pod (invariant 4)", () => {
    const pods = () => workloads(dev).map((w) => [w.name, reveal(w.inputs)] as const);

    it("has one workload per agent and per service", () => {
        expect(pods().map(([name]) => name).sort()).toEqual(["agent-bart", "agent-lisa", "egress-gateway", "key-proxy"]);
    });

    it.each(["agent-bart", "agent-lisa", "egress-gateway", "key-proxy"])("%s: read-only, no capabilities, no escalation, seccomp, numeric non-root, limited, no API token", (name) => {
        const workload = pods().find(([n]) => n === name)![1];
        expect(workload.spec.replicas).toBe(1);
        const pod = workload.spec.template.spec;
        expect(pod.automountServiceAccountToken).toBe(false);
        expect(pod.hostNetwork).toBe(false);
        expect(pod.hostPID).toBe(false);
        expect(pod.hostIPC).toBe(false);
        expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, seccompProfile: { type: "RuntimeDefault" } });
        expect(pod.containers).toHaveLength(1);
        expect(pod.initContainers).toBeUndefined();
        const [container] = pod.containers;
        expect(container.securityContext).toEqual({
            readOnlyRootFilesystem: true,
            allowPrivilegeEscalation: false,
            privileged: false,
            capabilities: { drop: ["ALL"] },
            runAsNonRoot: true,
            runAsUser: 1000,
            runAsGroup: 1000,
            seccompProfile: { type: "RuntimeDefault" },
        });
        expect(container.resources.limits.memory).toMatch(/^\d+Mi$/);
        expect(container.resources.limits.cpu).toMatch(/^\d+m$/);
        expect(container.resources.requests).toEqual(container.resources.limits);
        expect(container.image).toMatch(/:[\w.-]+(@sha256:[0-9a-f]{64})?$/);
        expect(container.livenessProbe.exec.command.length).toBeGreaterThan(0);
        for (const volume of pod.volumes) {
            expect(volume.hostPath).toBeUndefined();
            if (volume.emptyDir) expect(volume.emptyDir).toMatchObject({ medium: "Memory", sizeLimit: expect.stringMatching(/Mi$/) });
        }
        expect(JSON.stringify(workload)).not.toContain("docker.sock");
    });

    it("agents: state on their own claim, the OpenClaw config read-only from their Secret, the DNS sink as only resolver", () => {
        const dnsAddress = inputsOf(dev, "core/v1:Service", "egress-gateway-dns");
        for (const agent of ["bart", "lisa"]) {
            const sts = inputsOf(dev, "apps/v1:StatefulSet", `agent-${agent}`);
            const pod = sts.spec.template.spec;
            expect(sts.spec.volumeClaimTemplates.map((c: any) => c.metadata.name)).toEqual(["state"]);
            expect(pod.containers[0].volumeMounts).toEqual(
                expect.arrayContaining([
                    { name: "state", mountPath: "/home/node", readOnly: false },
                    { name: "config", mountPath: "/etc/openclaw", readOnly: true },
                ]),
            );
            expect(pod.volumes).toContainEqual({ name: "config", secret: { secretName: `agent-${agent}-config`, defaultMode: 0o440 } });
            expect(pod.dnsPolicy).toBe("None");
            expect(pod.dnsConfig.nameservers).toHaveLength(1);
            expect(dnsAddress.metadata.name).toBe("egress-dns");
            expect(pod.runtimeClassName).toBeUndefined();
        }
    });

    it("KeyProxy: exactly one writer of its ledger volume (one replica, Recreate)", () => {
        const deployment = inputsOf(dev, "apps/v1:Deployment", "key-proxy");
        expect(deployment.spec.strategy).toEqual({ type: "Recreate" });
        expect(deployment.spec.template.spec.volumes).toContainEqual({ name: "data", persistentVolumeClaim: { claimName: "key-proxy-data" } });
        expect(inputsOf(dev, "core/v1:PersistentVolumeClaim", "key-proxy-data").spec.accessModes).toEqual(["ReadWriteOnce"]);
    });

    it("a stack RuntimeClass reaches every agent pod; an agent's own runtime wins", async () => {
        for (const agent of ["bart", "lisa"]) expect(inputsOf(monitored, "apps/v1:StatefulSet", `agent-${agent}`).spec.template.spec.runtimeClassName).toBe("gvisor");
        const agents = (devConfig().agents as any[]).map((a) => (a.name === "lisa" ? { ...a, runtime: "kata" } : a));
        const resources = await runProgram(kubernetesConfig({ agents, kubernetes: { runtimeClassName: "gvisor" } }));
        expect(inputsOf(resources, "apps/v1:StatefulSet", "agent-lisa").spec.template.spec.runtimeClassName).toBe("kata");
        expect(inputsOf(resources, "apps/v1:StatefulSet", "agent-bart").spec.template.spec.runtimeClassName).toBe("gvisor");
    });
});

describe("no real key outside KeyProxy's keys Secret (invariant 1)", () => {
    it("only key-proxy-keys holds the real keys, and KeyProxy's pod takes them from there by reference", () => {
        const secrets = Object.values(FAKE_SECRETS);
        const holders = dev.filter((r) => secrets.some((s) => JSON.stringify(reveal(r.inputs)).includes(s))).map((r) => `${r.type} ${r.name}`);
        expect(holders).toEqual([`${K("core/v1:Secret")} key-proxy-keys`]);
        expect(inputsOf(dev, "core/v1:Secret", "key-proxy-keys").stringData).toEqual({ KEYPROXY_KEY_ANTHROPIC: FAKE_SECRETS.anthropicApiKey, KEYPROXY_KEY_OPENAI: FAKE_SECRETS.openaiApiKey });
        const env = inputsOf(dev, "apps/v1:Deployment", "key-proxy").spec.template.spec.containers[0].env;
        expect(env).toContainEqual({ name: "KEYPROXY_KEY_ANTHROPIC", valueFrom: { secretKeyRef: { name: "key-proxy-keys", key: "KEYPROXY_KEY_ANTHROPIC" } } });
    });

    it("each agent's config carries its own credential and points at its own KeyProxy Service", () => {
        for (const agent of ["bart", "lisa"]) {
            const config = JSON.parse(inputsOf(dev, "core/v1:Secret", `agent-${agent}-config`).stringData["openclaw.json"]);
            const service = dev.find((r) => r.type === K("core/v1:Service") && r.name === `key-proxy-${agent}`)!;
            expect(config.models.providers.anthropic.apiKey).toMatch(/^ocp_/);
            expect(config.models.providers.anthropic.baseUrl).toMatch(/^http:\/\/10\.96\.\d+\.\d+:8080\/anthropic$/);
            expect(service.inputs.spec.ports).toEqual([{ name: "agent", protocol: "TCP", port: 8080, targetPort: (devConfig().agents as any[]).find((a) => a.name === agent).dashboardPort }]);
        }
    });

    it("registers each agent with KeyProxy by its credential's digest and its port, and the services accept the entries with the schemas of their deployed config", () => {
        const serviceConfig = (name: string) => JSON.parse(inputsOf(dev, "core/v1:Secret", name).stringData.config);
        const keyProxySchema = agentEntrySchema(keyProxyOwnPorts(runtimeConfigSchema.parse(serviceConfig("key-proxy-config"))));
        const egressSchema = egressAgentSchema(egressOwnPorts(egressConfigSchema.parse(serviceConfig("egress-gateway-config"))));
        const entry = JSON.parse(Buffer.from(inputsOf(dev, "core/v1:SecretPatch", "key-proxy-register-bart").data["bart.json"], "base64").toString("utf8"));
        const credential = JSON.parse(inputsOf(dev, "core/v1:Secret", "agent-bart-config").stringData["openclaw.json"]).models.providers.anthropic.apiKey;
        expect(entry).toEqual({ name: "bart", credentialSha256: createHash("sha256").update(credential).digest("hex"), budget: { dailyUsd: 5, monthlyUsd: 50 }, port: 18801 });
        expect(keyProxySchema.parse(entry)).toEqual(entry);
        expect(keyProxySchema.safeParse({ ...entry, port: 8080 }).success).toBe(false);
        const egress = JSON.parse(Buffer.from(inputsOf(dev, "core/v1:SecretPatch", "egress-gateway-register-lisa").data["lisa.json"], "base64").toString("utf8"));
        expect(egress).toEqual({ name: "lisa", mode: "enforce", allow: [{ host: "pypi.org", ports: [443] }, { host: "files.pythonhosted.org", ports: [443] }], port: 18802 });
        expect(egressSchema.parse(egress)).toEqual(egress);
        expect(egressSchema.safeParse({ ...egress, port: 3128 }).success).toBe(false);
    });
});

describe("isolation by NetworkPolicy (invariant 2)", () => {
    const policiesOf = (resources: RecordedResource[]): Policy[] =>
        byKind(resources, "networking.k8s.io/v1:NetworkPolicy").map((r) => ({ namespace: reveal(r.inputs).metadata.namespace, spec: reveal(r.inputs).spec }));
    const pod = (role: string, agent?: string): Endpoint => ({ namespace: "openclaw-dev", labels: { "openclaw.stack": "dev", "openclaw.role": role, ...(agent ? { "openclaw.agent": agent } : {}) } });
    const [bart, lisa, keyProxy, egress] = [pod("agent", "bart"), pod("agent", "lisa"), pod("key-proxy"), pod("egress-gateway")];
    const kubeDns: Endpoint = { namespace: "kube-system", labels: { "k8s-app": "kube-dns" } };
    const prometheus: Endpoint = { namespace: "monitoring", labels: { app: "prometheus" } };
    const stranger: Endpoint = { namespace: "default", labels: { app: "anything" } };
    const internet: Endpoint = { ip: "93.184.215.14" };

    it("the namespace denies everything by default", () => {
        expect(inputsOf(dev, "networking.k8s.io/v1:NetworkPolicy", "default-deny").spec).toEqual({ podSelector: {}, policyTypes: ["Ingress", "Egress"], ingress: [], egress: [] });
    });

    const CASES: [string, Endpoint, Endpoint, number, "TCP" | "UDP", boolean][] = [
        ["bart to its own port on KeyProxy", bart, keyProxy, 18801, "TCP", true],
        ["bart to its own port on EgressGateway", bart, egress, 18801, "TCP", true],
        ["bart to the DNS sink (udp)", bart, egress, 53, "UDP", true],
        ["bart to the DNS sink (tcp)", bart, egress, 53, "TCP", true],
        ["bart to lisa's port on KeyProxy", bart, keyProxy, 18802, "TCP", false],
        ["lisa to bart's port on EgressGateway", lisa, egress, 18801, "TCP", false],
        ["bart to KeyProxy's own listener", bart, keyProxy, 8080, "TCP", false],
        ["bart to KeyProxy's metrics", bart, keyProxy, 9443, "TCP", false],
        ["bart to lisa's dashboard", bart, lisa, 18789, "TCP", false],
        ["lisa to bart on any port", lisa, bart, 18801, "TCP", false],
        ["bart to the cluster DNS", bart, kubeDns, 53, "UDP", false],
        ["bart to the internet", bart, internet, 443, "TCP", false],
        ["KeyProxy to the internet", keyProxy, internet, 443, "TCP", true],
        ["EgressGateway to the internet", egress, internet, 443, "TCP", true],
        ["EgressGateway to the cluster DNS", egress, kubeDns, 53, "UDP", true],
        ["KeyProxy to cloud metadata", keyProxy, { ip: "169.254.169.254" }, 80, "TCP", false],
        ["EgressGateway to the cluster's private range", egress, { ip: "10.0.0.1" }, 443, "TCP", false],
        ["KeyProxy to an agent", keyProxy, bart, 18789, "TCP", false],
        ["another namespace to KeyProxy's metrics", stranger, keyProxy, 9443, "TCP", false],
        ["another namespace to an agent", stranger, bart, 18789, "TCP", false],
    ];
    it.each(CASES)("%s: %s", (_name, from, to, port, protocol, expected) => {
        expect(allowed(policiesOf(dev), from, to, port, protocol)).toBe(expected);
    });

    it.each([
        ["the monitoring namespace to KeyProxy's metrics", prometheus, keyProxy, 9443, true],
        ["the monitoring namespace to EgressGateway's metrics", prometheus, egress, 9444, true],
        ["the monitoring namespace to KeyProxy's agent port", prometheus, keyProxy, 18801, false],
        ["the monitoring namespace to an agent", prometheus, bart, 18789, false],
        ["another namespace to KeyProxy's metrics", stranger, keyProxy, 9443, false],
    ] as const)("monitored stack: %s: %s", (_name, from, to, port, expected) => {
        expect(allowed(policiesOf(monitored), from, to, port)).toBe(expected);
        expect(allowed(policiesOf(dev), from, to, port)).toBe(false);
    });

    it("the metrics listener binds only when a monitoring namespace may reach it, and then needs its token", () => {
        const config = (resources: RecordedResource[]) => JSON.parse(inputsOf(resources, "core/v1:Secret", "key-proxy-config").stringData.config);
        expect(config(dev).admin).toEqual([{ host: "127.0.0.1", port: 9464 }]);
        expect(config(monitored).admin).toEqual([{ host: "127.0.0.1", port: 9464 }, { host: "0.0.0.0", port: 9443, bearerToken: expect.stringMatching(/^\w{48}$/) }]);
    });
});

describe("adding an agent (invariant 8)", () => {
    it("adds homer's resources and changes no input of any other resource", () => {
        const key = (r: RecordedResource) => `${r.type} ${r.name}`;
        const before = new Map(dev.map((r) => [key(r), reveal(r.inputs)]));
        const added = withHomer.filter((r) => !before.has(key(r))).map(key).sort();
        expect(added).toEqual(sorted(perAgent("homer")));
        for (const r of withHomer.filter((r) => before.has(key(r)))) expect(reveal(r.inputs), key(r)).toEqual(before.get(key(r)));
    });
});

describe("config for the Kubernetes backend (invariant 9)", () => {
    it.each([
        ["a monitoring VPS", { monitoring: { host: "ssh://ops@mon.example.net", publishAddress: "203.0.113.7", scrape: { address: "agents.example.net", publishAddress: "198.51.100.4" } } }, /openclaw:monitoring: .*kubernetes\.monitoringNamespace/],
        ["an agent port that is KeyProxy's own", { agents: [{ name: "bart", dashboardPort: 8080, budget: { dailyUsd: 1 } }] }, /openclaw:agents\[0\]\.dashboardPort: port 8080 is one KeyProxy or EgressGateway listens on/],
        ["a runtime that is no RuntimeClass name", { agents: [{ name: "bart", dashboardPort: 18801, budget: { dailyUsd: 1 }, runtime: "run_sc" }] }, /openclaw:agents\[0\]\.runtime: on kubernetes this names a RuntimeClass/],
        ["a namespace that is no DNS label", { kubernetes: { namespace: "Open_Claw" } }, /openclaw:kubernetes\.namespace: must be a DNS label/],
        ["an unknown kubernetes key", { kubernetes: { replicas: 3 } }, /openclaw:kubernetes\.replicas: unknown key/],
        ["an unknown backend", { backend: "nomad" }, /openclaw:backend: /],
    ])("refuses %s, naming the key", (_name, extra, message) => {
        expect(() => parseStackConfig(kubernetesConfig(extra))).toThrow(ConfigError);
        expect(() => parseStackConfig(kubernetesConfig(extra))).toThrow(message);
    });

    it("the same agents' ports are fine on the Docker backend", () => {
        expect(parseStackConfig({ ...devConfig(), agents: [{ name: "bart", dashboardPort: 8080, budget: { dailyUsd: 1 }, runtime: "run_sc" }] }).agents[0].dashboardPort).toBe(8080);
    });
});
