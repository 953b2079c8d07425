import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { createHash } from "node:crypto";
import { type MonitoringConfig, type MonitoringService, sshTarget } from "../infra/config";
import { LABELS, PORTS, dockerNames } from "../infra/topology";
import { ownCa } from "./certificates";
import { type HardenedContainerSpec, type PublishedPort, hardenedContainer, publishAddressLabel } from "./hardening";
import {
    MONITORING_PATHS,
    SCRAPE_JOBS,
    type ScrapeEndpoint,
    type WatchedEndpoint,
    alertRulesFile,
    grafanaDashboard,
    grafanaDashboardProviders,
    grafanaDatasources,
    hostPreparationScript,
    prometheusConfig,
    uptimeKumaWatchList,
} from "./monitoringConfig";
import type { RemoteMetrics } from "./sharedService";

export interface MonitoringStackArgs {
    stack: string;
    config: MonitoringConfig;
}

/** What the agents' host serves the monitoring host's scrapes with. */
export type ScrapeCredentials = Pick<RemoteMetrics, "certPem" | "keyPem" | "bearerToken">;

/** Each monitoring image's user (never root) and health check, as the images ship them. */
const SERVICE_IMAGES: Record<MonitoringService, { user: string; healthcheck: string[] }> = {
    // prom/prometheus runs as nobody and carries busybox's wget.
    prometheus: { user: "65534:65534", healthcheck: ["CMD", "wget", "-q", "-O", "/dev/null", `http://127.0.0.1:${PORTS.prometheus}/-/healthy`] },
    // grafana/grafana's user is 472; its group is 0 for OpenShift, which it does not need here.
    grafana: { user: "472:472", healthcheck: ["CMD", "wget", "-q", "--no-check-certificate", "-O", "/dev/null", `https://127.0.0.1:${PORTS.grafana}/api/health`] },
    // The -rootless tags run as node (1000) and ship their own health check (which follows UPTIME_KUMA_SSL_*).
    uptimeKuma: { user: "1000:1000", healthcheck: ["CMD", "/app/extra/healthcheck"] },
};

const SERVICE_NAMES: Record<MonitoringService, string> = { prometheus: "prometheus", grafana: "grafana", uptimeKuma: "uptime-kuma" };

/** Pure: the scrape endpoints on the agents' host, as the monitoring host dials them. */
export function scrapeEndpoints(config: MonitoringConfig): ScrapeEndpoint[] {
    const { address, ports } = config.scrape;
    return [
        { job: SCRAPE_JOBS.keyProxy, target: `${address}:${ports.keyProxy}` },
        { job: SCRAPE_JOBS.egressGateway, target: `${address}:${ports.egressGateway}` },
    ];
}

/** What every builder below needs: the component (parent of every resource), its name, the stack and its config. */
interface Builder {
    name: string;
    stack: string;
    config: MonitoringConfig;
    parent: pulumi.Resource;
}

/** A certificate and its key, as the containers serving it get them. */
interface TlsPair {
    certPem: pulumi.Output<string>;
    keyPem: pulumi.Output<string>;
}

/**
 * One monitoring service's own part of its container: the rest is the same for all three (`serviceContainers`).
 * Its `uploads` go onto its config volume: Docker copies files into a read-only container only onto volumes.
 */
type ServiceSpec = Pick<HardenedContainerSpec, "envs" | "command" | "uploads" | "sysctls"> & { dataPath: string; ports: PublishedPort[] };

/** The monitoring host prepared over SSH (Docker, firewall), then the Docker provider that deploys onto it. */
function hostProvider({ name, config, parent }: Builder): docker.Provider {
    const ssh = sshTarget(config.host);
    const script = hostPreparationScript({ sshPort: ssh.port, openPorts: [config.ports.grafana, config.ports.uptimeKuma] });
    const prepare = new command.remote.Command(
        `${name}-host-prepare`,
        {
            connection: { host: ssh.host, user: ssh.user, port: ssh.port },
            create: ssh.user === "root" ? "bash -s" : "sudo -n bash -s",
            stdin: script,
            triggers: [createHash("sha256").update(script).digest("hex")],
        },
        { parent },
    );
    return new docker.Provider(`${name}-host`, { host: config.host, sshOpts: config.sshOpts }, { parent, dependsOn: [prepare] });
}

/**
 * One CA of the program's own, and the certificates it signs: the metrics endpoints' (on the agents' host, for the
 * scrape address; Prometheus pins the CA) and the UIs' (for `publishAddress`; operators import the CA).
 */
function monitoringPki({ name, stack, config, parent }: Builder): { caCertPem: pulumi.Output<string>; metricsServer: TlsPair; ui: TlsPair } {
    const { caCertPem, issue } = ownCa(parent, name, `OpenClaw ${stack} monitoring CA`);
    return { caCertPem, metricsServer: issue("metrics-server", config.scrape.address), ui: issue("ui", config.publishAddress) };
}

/**
 * The monitoring network, and a function that declares one service's hardened container on it, with its data volume
 * at `dataPath` and its config volume (the generated files).
 */
function serviceContainers({ name, stack, config, parent }: Builder, provider: docker.Provider): (service: MonitoringService, spec: ServiceSpec) => void {
    const onHost = { parent, provider };
    const network = new docker.Network(
        `${name}-network`,
        { name: dockerNames.monitoringNetwork(stack), driver: "bridge", labels: [{ label: LABELS.stack, value: stack }] },
        onHost,
    );
    const volume = (service: MonitoringService, purpose: "data" | "config") =>
        new docker.Volume(
            `${name}-${SERVICE_NAMES[service]}-${purpose}`,
            { name: dockerNames.monitoringVolume(stack, SERVICE_NAMES[service], purpose), labels: [{ label: LABELS.stack, value: stack }] },
            onHost,
        );
    return (service, spec) => {
        hardenedContainer(
            `${name}-${SERVICE_NAMES[service]}`,
            {
                containerName: dockerNames.monitoringContainer(stack, SERVICE_NAMES[service]),
                image: config.images[service],
                user: SERVICE_IMAGES[service].user,
                resources: config.resources[service],
                labels: {
                    [LABELS.stack]: stack,
                    [LABELS.role]: SERVICE_NAMES[service],
                    ...publishAddressLabel(spec.ports),
                },
                healthcheck: { tests: SERVICE_IMAGES[service].healthcheck, startPeriod: "60s" },
                networks: [{ name: network.name, aliases: [SERVICE_NAMES[service]] }],
                envs: spec.envs,
                command: spec.command,
                ports: spec.ports,
                volumes: [
                    { volumeName: volume(service, "data").name, containerPath: spec.dataPath },
                    { volumeName: volume(service, "config").name, containerPath: MONITORING_PATHS.config },
                ],
                tmpfs: { "/tmp": "64m" },
                uploads: spec.uploads,
                sysctls: spec.sysctls,
                exceptions: config.hardeningExceptions[service],
            },
            config.host,
            onHost,
        );
    };
}

/** Prometheus: scrapes the agents' host over TLS, pinning the CA, with the token; evaluates the alert rules. */
function prometheusSpec(stack: string, config: MonitoringConfig, endpoints: ScrapeEndpoint[], caCertPem: pulumi.Output<string>, bearerToken: pulumi.Output<string>): ServiceSpec {
    return {
        command: [
            `--config.file=${MONITORING_PATHS.prometheusConfig}`,
            `--storage.tsdb.path=${MONITORING_PATHS.prometheusData}`,
            `--storage.tsdb.retention.time=${config.retentionDays}d`,
            `--web.listen-address=0.0.0.0:${PORTS.prometheus}`,
        ],
        dataPath: MONITORING_PATHS.prometheusData,
        uploads: [
            {
                file: MONITORING_PATHS.prometheusConfig,
                content: prometheusConfig({ stack, endpoints, caFile: MONITORING_PATHS.prometheusCa, tokenFile: MONITORING_PATHS.prometheusToken, rulesFile: MONITORING_PATHS.prometheusRules }),
            },
            { file: MONITORING_PATHS.prometheusRules, content: alertRulesFile(config.alerts) },
            { file: MONITORING_PATHS.prometheusCa, content: caCertPem },
            { file: MONITORING_PATHS.prometheusToken, content: bearerToken },
        ],
        // Its web UI has no login: loopback only (ssh -L 9090:127.0.0.1:9090 to reach it).
        ports: [{ internal: PORTS.prometheus, external: PORTS.prometheus, ip: "127.0.0.1" }],
    };
}

/** The UIs' certificate and key, as files in a container. */
const uiTlsFiles = (ui: TlsPair) => [
    { file: MONITORING_PATHS.uiCert, content: ui.certPem },
    { file: MONITORING_PATHS.uiKey, content: ui.keyPem },
];

/** Grafana over HTTPS: admin password from a file, no anonymous access or sign-up, datasource and dashboard provisioned. */
function grafanaSpec(stack: string, config: MonitoringConfig, adminPassword: pulumi.Output<string>, ui: TlsPair): ServiceSpec {
    return {
        envs: [
            "GF_SECURITY_ADMIN_USER=admin",
            `GF_SECURITY_ADMIN_PASSWORD__FILE=${MONITORING_PATHS.grafanaAdminPassword}`,
            "GF_AUTH_ANONYMOUS_ENABLED=false",
            "GF_AUTH_BASIC_ENABLED=false",
            "GF_USERS_ALLOW_SIGN_UP=false",
            "GF_SECURITY_DISABLE_GRAVATAR=true",
            "GF_ANALYTICS_REPORTING_ENABLED=false",
            "GF_ANALYTICS_CHECK_FOR_UPDATES=false",
            "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES=false",
            `GF_PATHS_PROVISIONING=${MONITORING_PATHS.grafanaProvisioning}`,
            `GF_PATHS_DATA=${MONITORING_PATHS.grafanaData}`,
            `GF_PATHS_LOGS=${MONITORING_PATHS.grafanaData}/logs`,
            "GF_LOG_MODE=console",
            `GF_SERVER_HTTP_PORT=${PORTS.grafana}`,
            "GF_SERVER_PROTOCOL=https",
            `GF_SERVER_CERT_FILE=${MONITORING_PATHS.uiCert}`,
            `GF_SERVER_CERT_KEY=${MONITORING_PATHS.uiKey}`,
        ],
        dataPath: MONITORING_PATHS.grafanaData,
        uploads: [
            { file: MONITORING_PATHS.grafanaAdminPassword, content: adminPassword },
            ...uiTlsFiles(ui),
            { file: MONITORING_PATHS.grafanaDatasources, content: grafanaDatasources(SERVICE_NAMES.prometheus) },
            { file: MONITORING_PATHS.grafanaDashboardProviders, content: grafanaDashboardProviders() },
            { file: MONITORING_PATHS.grafanaDashboard, content: grafanaDashboard(stack) },
        ],
        ports: [{ internal: PORTS.grafana, external: config.ports.grafana, ip: config.publishAddress }],
    };
}

/** Uptime Kuma over HTTPS with the UIs' certificate. */
function uptimeKumaSpec(config: MonitoringConfig, ui: TlsPair): ServiceSpec {
    return {
        envs: [
            `UPTIME_KUMA_PORT=${PORTS.uptimeKuma}`,
            `DATA_DIR=${MONITORING_PATHS.uptimeKumaData}/`,
            `UPTIME_KUMA_SSL_CERT=${MONITORING_PATHS.uiCert}`,
            `UPTIME_KUMA_SSL_KEY=${MONITORING_PATHS.uiKey}`,
        ],
        dataPath: MONITORING_PATHS.uptimeKumaData,
        uploads: uiTlsFiles(ui),
        ports: [{ internal: PORTS.uptimeKuma, external: config.ports.uptimeKuma, ip: config.publishAddress }],
        // Ping monitors without CAP_NET_RAW: unprivileged ICMP sockets, in this container's namespace only.
        sysctls: { "net.ipv4.ping_group_range": "0 2147483647" },
    };
}

/**
 * The monitoring VPS: a Docker provider of its own (ssh://), the host prepared over SSH (Docker, firewall),
 * Prometheus scraping the agents' host over TLS with a token, Grafana provisioned from code, and Uptime Kuma.
 * Nothing here runs on the agents' host: the only thing the agents' host gets is the scrape credentials.
 */
export class MonitoringStack extends pulumi.ComponentResource {
    public readonly scrapeCredentials: ScrapeCredentials;
    public readonly provider: docker.Provider;
    public readonly grafanaUrl: string;
    public readonly uptimeKumaUrl: string;
    /** Prometheus listens on the monitoring host's loopback only: reach it through an SSH tunnel. */
    public readonly prometheusUrl: string;
    public readonly watchList: WatchedEndpoint[];
    public readonly grafanaAdminPassword: pulumi.Output<string>;
    /** The monitoring CA: import it to trust the UIs' certificates (they name `publishAddress`). */
    public readonly caCertPem: pulumi.Output<string>;

    constructor(name: string, args: MonitoringStackArgs, opts?: pulumi.ComponentResourceOptions) {
        super("openclaw:index:MonitoringStack", name, {}, opts);
        const { stack, config } = args;
        const builder: Builder = { name, stack, config, parent: this };
        this.provider = hostProvider(builder);
        const pki = monitoringPki(builder);
        this.caCertPem = pki.caCertPem;
        const token = new random.RandomPassword(`${name}-metrics-token`, { length: 48, special: false }, { parent: this });
        const bearerToken = pulumi.secret(token.result);
        this.scrapeCredentials = { ...pki.metricsServer, bearerToken };

        const serviceContainer = serviceContainers(builder, this.provider);
        const endpoints = scrapeEndpoints(config);
        serviceContainer("prometheus", prometheusSpec(stack, config, endpoints, pki.caCertPem, bearerToken));
        const adminPassword = new random.RandomPassword(`${name}-grafana-admin-password`, { length: 32, special: false }, { parent: this });
        this.grafanaAdminPassword = pulumi.secret(adminPassword.result);
        serviceContainer("grafana", grafanaSpec(stack, config, this.grafanaAdminPassword, pki.ui));
        serviceContainer("uptimeKuma", uptimeKumaSpec(config, pki.ui));

        this.grafanaUrl = `https://${config.publishAddress}:${config.ports.grafana}`;
        this.uptimeKumaUrl = `https://${config.publishAddress}:${config.ports.uptimeKuma}`;
        this.prometheusUrl = `http://127.0.0.1:${PORTS.prometheus}`;
        this.watchList = uptimeKumaWatchList({ scrapeEndpoints: endpoints, grafanaUrl: this.grafanaUrl });

        this.registerOutputs({
            grafanaUrl: this.grafanaUrl,
            uptimeKumaUrl: this.uptimeKumaUrl,
            prometheusUrl: this.prometheusUrl,
            watchList: this.watchList,
            grafanaAdminPassword: this.grafanaAdminPassword,
            caCertPem: this.caCertPem,
        });
    }
}
