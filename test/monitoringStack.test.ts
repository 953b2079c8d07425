// MonitoringStack under mocks: everything it declares runs on the monitoring host's provider, nothing on the
// agents' host; the agents' host only gains the metrics endpoint (TLS, token, uplink address, opted-in publish).
import { createHash } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { hostPreparationScript } from "../components/monitoringConfig";
import { parseStackConfig } from "../infra/config";
import { PORTS, uplinkAddresses } from "../infra/topology";
import { CONTAINER, evaluate } from "../policy/policies";
import { type RecordedResource, TYPES, byType, devConfig, isSecret, reveal, runProgram } from "./support/mockStack";

const MONITORING = {
    host: "ssh://ops@monitor.example.net:2222",
    sshOpts: ["-o", "StrictHostKeyChecking=yes"],
    publishAddress: "203.0.113.7",
    scrape: { address: "agents.example.net", publishAddress: "198.51.100.4" },
};
const monitored = () => ({ ...devConfig(), monitoring: MONITORING });
const MONITORING_HOST_PROVIDER = "pulumi:providers:docker::monitoring-host::";
const AGENTS_HOST_PROVIDER = "pulumi:providers:docker::agents-host::";

let withMonitoring: RecordedResource[];
let without: RecordedResource[];
beforeAll(async () => {
    withMonitoring = await runProgram(monitored());
    without = await runProgram(devConfig());
});

const named = (resources: RecordedResource[], name: string) => resources.find((r) => r.name === name)!;
const isMonitoring = (r: RecordedResource) => r.name.startsWith("monitoring-");
const labels = (r: RecordedResource) => Object.fromEntries(reveal(r.inputs.labels).map((l: { label: string; value: string }) => [l.label, l.value]));
const monitoringContainers = () => byType(withMonitoring, TYPES.container).filter(isMonitoring);

describe("where the monitoring stack runs", () => {
    it("is one component, openclaw:index:MonitoringStack, its children named monitoring-*", () => {
        expect(withMonitoring.filter((r) => r.type === "openclaw:index:MonitoringStack").map((r) => r.name)).toEqual(["monitoring"]);
        expect(monitoringContainers().map((c) => c.inputs.name).sort()).toEqual(["openclaw-dev-grafana", "openclaw-dev-prometheus", "openclaw-dev-uptime-kuma"]);
    });

    it("has its own Docker provider, for ssh://user@host with the stack's ssh options", () => {
        const provider = named(withMonitoring, "monitoring-host");
        expect(provider.type).toBe("pulumi:providers:docker");
        expect(provider.inputs.host).toBe(MONITORING.host);
        expect(JSON.parse(provider.inputs.sshOpts)).toEqual(MONITORING.sshOpts);
    });

    it("declares every Docker resource of the monitoring stack on that provider, and none on the agents' host", () => {
        const docker = withMonitoring.filter((r) => r.type.startsWith("docker:"));
        const monitoring = docker.filter(isMonitoring);
        expect(monitoring.length).toBeGreaterThanOrEqual(9);
        for (const r of monitoring) expect(r.provider, r.name).toContain(MONITORING_HOST_PROVIDER);
        for (const r of docker.filter((d) => !isMonitoring(d))) expect(r.provider, r.name).toContain(AGENTS_HOST_PROVIDER);
    });

    it("points every command of the monitoring stack at the monitoring host, none at the agents' host", () => {
        const commands = byType(withMonitoring, TYPES.command).filter(isMonitoring);
        expect(commands).toHaveLength(3);
        for (const c of commands) expect(c.inputs.environment.DOCKER_HOST, c.name).toBe(MONITORING.host);
        const agentsHost = parseStackConfig(monitored()).dockerHost;
        for (const c of byType(withMonitoring, TYPES.command).filter((c) => !isMonitoring(c))) expect(c.inputs.environment.DOCKER_HOST).toBe(agentsHost);
    });

    it("prepares the host over SSH with the generated script, re-run only when the script changes", () => {
        const prepare = named(withMonitoring, "monitoring-host-prepare");
        expect(prepare.type).toBe("command:remote:Command");
        expect(reveal(prepare.inputs.connection)).toMatchObject({ host: "monitor.example.net", user: "ops", port: 2222 });
        expect(prepare.inputs.create).toBe("sudo -n bash -s");
        const script = hostPreparationScript({ sshPort: 2222, openPorts: [3000, 3001] });
        expect(prepare.inputs.stdin).toBe(script);
        expect(prepare.inputs.triggers).toEqual([createHash("sha256").update(script).digest("hex")]);
    });

    it("adds no container, network or volume to the agents' host, and changes no agent", () => {
        const onAgentsHost = (resources: RecordedResource[]) => resources.filter((r) => r.type.startsWith("docker:") && !isMonitoring(r)).map((r) => r.name).sort();
        expect(onAgentsHost(withMonitoring)).toEqual(onAgentsHost(without));
        for (const name of ["agent-bart-container", "agent-lisa-container", "agent-bart-network"]) {
            expect(reveal(named(withMonitoring, name).inputs)).toEqual(reveal(named(without, name).inputs));
        }
    });
});

describe("the monitoring containers", () => {
    it("all pass the policy pack: hardened, ports on loopback or the declared publish address", () => {
        const verdicts = evaluate(monitoringContainers().map((c) => ({ type: CONTAINER, name: c.name, props: reveal(c.inputs) })));
        expect(verdicts.filter((v) => v.enforcementLevel === "mandatory")).toEqual([]);
        for (const c of monitoringContainers()) {
            const inputs = reveal(c.inputs);
            expect(inputs).toMatchObject({ readOnly: true, privileged: false, capabilities: { drops: ["ALL"] }, securityOpts: ["no-new-privileges:true"] });
            expect(inputs.user).toMatch(/^[1-9]\d*:[1-9]\d*$/);
        }
    });

    it("Prometheus keeps 30 days on a volume, loads the generated files, and listens on the monitoring host's loopback only", () => {
        const prometheus = reveal(named(withMonitoring, "monitoring-prometheus-container").inputs);
        expect(prometheus.command).toContain("--storage.tsdb.retention.time=30d");
        expect(prometheus.volumes).toContainEqual({ volumeName: "openclaw-dev-prometheus-data", containerPath: "/prometheus", readOnly: false });
        expect(prometheus.ports).toEqual([{ internal: PORTS.prometheus, external: PORTS.prometheus, ip: "127.0.0.1", protocol: "tcp" }]);
        const config = prometheus.uploads.find((u: { file: string }) => u.file.endsWith("prometheus.yml")).content;
        expect(config).toContain("- agents.example.net:9464");
        expect(config).toContain("- agents.example.net:9465");
    });

    it("hands Prometheus the token and the CA as files, the token as a secret", () => {
        const uploads = named(withMonitoring, "monitoring-prometheus-container").inputs.uploads;
        expect(isSecret(uploads)).toBe(true);
        const token = reveal(uploads).find((u: { file: string }) => u.file.endsWith("metrics-token"));
        expect(token.content).toBe(reveal(named(withMonitoring, "key-proxy-container").inputs.envs).find((e: string) => e.startsWith("KEYPROXY_CONFIG=")).match(/"bearerToken":"(\w+)"/)[1]);
        expect(reveal(uploads).find((u: { file: string }) => u.file.endsWith("metrics-ca.pem")).content).toBe("mock-cert-pem:monitoring-ca");
    });

    it("Grafana: admin password generated and secret (read from a file, not an env var), anonymous access off, datasource and dashboard provisioned", () => {
        const grafana = named(withMonitoring, "monitoring-grafana-container");
        const inputs = reveal(grafana.inputs);
        expect(inputs.envs).toContain("GF_AUTH_ANONYMOUS_ENABLED=false");
        expect(inputs.envs.some((e: string) => e.startsWith("GF_SECURITY_ADMIN_PASSWORD="))).toBe(false);
        expect(isSecret(grafana.inputs.uploads)).toBe(true);
        expect(inputs.uploads.find((u: { file: string }) => u.file.endsWith("admin-password")).content).toMatch(/^\w{32}$/);
        expect(named(withMonitoring, "monitoring-grafana-admin-password").type).toBe(TYPES.password);
        const files = inputs.uploads.map((u: { file: string }) => u.file);
        expect(files).toEqual(expect.arrayContaining(["/etc/openclaw/provisioning/datasources/prometheus.yml", "/etc/openclaw/provisioning/dashboards/openclaw.yml", "/etc/openclaw/dashboards/openclaw.json"]));
        expect(inputs.ports).toEqual([{ internal: PORTS.grafana, external: 3000, ip: MONITORING.publishAddress, protocol: "tcp" }]);
    });

    it.each([
        ["monitoring-grafana-container", ["GF_SERVER_PROTOCOL=https", "GF_SERVER_CERT_FILE=/etc/openclaw/tls/ui.pem", "GF_SERVER_CERT_KEY=/etc/openclaw/tls/ui-key.pem"]],
        ["monitoring-uptime-kuma-container", ["UPTIME_KUMA_SSL_CERT=/etc/openclaw/tls/ui.pem", "UPTIME_KUMA_SSL_KEY=/etc/openclaw/tls/ui-key.pem"]],
    ])("%s serves HTTPS with a certificate from the monitoring CA, its key a secret on the config volume", (name, envs) => {
        const container = named(withMonitoring, name);
        const inputs = reveal(container.inputs);
        expect(inputs.envs).toEqual(expect.arrayContaining(envs));
        expect(isSecret(container.inputs.uploads)).toBe(true);
        const files = Object.fromEntries(inputs.uploads.map((u: { file: string; content: string }) => [u.file, u.content]));
        expect(files["/etc/openclaw/tls/ui.pem"]).toBe("mock-cert-pem:monitoring-ui-cert");
        expect(files["/etc/openclaw/tls/ui-key.pem"]).toBe("mock-private-key-pem:monitoring-ui-key");
        expect(inputs.volumes.find((v: { containerPath: string }) => v.containerPath === "/etc/openclaw")).toBeDefined();
    });

    it("issues the UI certificate for the published address, and the metrics certificate for the agents' host, from one CA", () => {
        expect(reveal(named(withMonitoring, "monitoring-ui-csr").inputs)).toMatchObject({ ipAddresses: [MONITORING.publishAddress] });
        expect(reveal(named(withMonitoring, "monitoring-metrics-server-csr").inputs)).toMatchObject({ dnsNames: [MONITORING.scrape.address] });
        for (const cert of ["monitoring-ui-cert", "monitoring-metrics-server-cert"]) {
            expect(reveal(named(withMonitoring, cert).inputs)).toMatchObject({ caCertPem: "mock-cert-pem:monitoring-ca", allowedUses: expect.arrayContaining(["server_auth"]) });
        }
    });

    it("Uptime Kuma keeps its data on a volume", () => {
        const kuma = reveal(named(withMonitoring, "monitoring-uptime-kuma-container").inputs);
        expect(kuma.volumes).toContainEqual({ volumeName: "openclaw-dev-uptime-kuma-data", containerPath: "/app/data", readOnly: false });
        expect(kuma.ports).toEqual([{ internal: PORTS.uptimeKuma, external: 3001, ip: MONITORING.publishAddress, protocol: "tcp" }]);
    });

    it("relaxes hardening only where the stack declares an exception with its reason, and the policy pack reports it as advisory", async () => {
        const reason = "the image writes its plugin cache outside its data volume";
        const resources = await runProgram({ ...monitored(), monitoring: { ...MONITORING, hardeningExceptions: { grafana: { "container-read-only": reason } } } });
        const grafana = reveal(named(resources, "monitoring-grafana-container").inputs);
        expect(grafana.readOnly).toBe(false);
        expect(reveal(named(resources, "monitoring-prometheus-container").inputs).readOnly).toBe(true);
        const verdicts = evaluate([{ type: CONTAINER, name: "monitoring-grafana-container", props: grafana }]);
        expect(verdicts.filter((v) => v.policy !== "image-digest")).toEqual([expect.objectContaining({ policy: "container-read-only", enforcementLevel: "advisory", message: expect.stringContaining(reason) })]);
    });
});

describe("the metrics endpoint on the agents' host", () => {
    const config = parseStackConfig(monitored());
    const uplink = uplinkAddresses(config.network.uplinkSubnet);

    it.each([
        ["key-proxy-container", "KEYPROXY_CONFIG", uplink.keyProxy, PORTS.keyProxyMetricsTls, 9464],
        ["egress-gateway-container", "EGRESS_CONFIG", uplink.egressGateway, PORTS.egressMetricsTls, 9465],
    ])("%s: TLS and the token, bound to its uplink address, published on the opted-in address only", (name, variable, address, containerPort, hostPort) => {
        const container = named(withMonitoring, name);
        const inputs = reveal(container.inputs);
        const env = inputs.envs.find((e: string) => e.startsWith(`${variable}=`));
        const admin = JSON.parse(env.slice(variable.length + 1)).admin;
        expect(admin[0]).toEqual({ host: "127.0.0.1", port: expect.any(Number) });
        expect(admin[1]).toEqual({
            host: address,
            port: containerPort,
            tls: { certPem: "mock-cert-pem:monitoring-metrics-server-cert", keyPem: "mock-private-key-pem:monitoring-metrics-server-key" },
            bearerToken: expect.stringMatching(/^\w{48}$/),
        });
        expect(inputs.networksAdvanced).toEqual([{ name: "openclaw-dev-uplink", ipv4Address: address }]);
        expect(inputs.ports).toEqual([{ internal: containerPort, external: hostPort, ip: MONITORING.scrape.publishAddress, protocol: "tcp" }]);
        expect(labels(container)["openclaw.publish-address"]).toBe(MONITORING.scrape.publishAddress);
        expect(isSecret(container.inputs.envs) || container.inputs.envs.some(isSecret)).toBe(true);
        expect(evaluate([{ type: CONTAINER, name, props: inputs }]).filter((v) => v.enforcementLevel === "mandatory")).toEqual([]);
    });

    it("without a monitoring stack, nothing is published and no remote listener exists", () => {
        for (const name of ["key-proxy-container", "egress-gateway-container"]) {
            const inputs = reveal(named(without, name).inputs);
            expect(inputs.ports).toBeUndefined();
            expect(JSON.stringify(inputs.envs)).not.toContain("bearerToken");
        }
    });
});
