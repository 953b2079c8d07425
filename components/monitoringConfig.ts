// Pure generators for the monitoring host's files: Prometheus config and alert rules, Grafana provisioning and
// dashboard, Uptime Kuma's watch list, and the host preparation script. No Pulumi here: tested without mocks.
import { stringify } from "yaml";
import { PORTS } from "../infra/topology";

/** The scrape jobs, named as the alert rules and dashboard select them. */
export const SCRAPE_JOBS = { keyProxy: "key-proxy", egressGateway: "egress-gateway" } as const;

/** Where the files live inside the monitoring containers (each on its own config volume). */
export const MONITORING_PATHS = {
    config: "/etc/openclaw",
    prometheusConfig: "/etc/openclaw/prometheus.yml",
    prometheusRules: "/etc/openclaw/rules.yml",
    prometheusCa: "/etc/openclaw/metrics-ca.pem",
    prometheusToken: "/etc/openclaw/metrics-token",
    prometheusData: "/prometheus",
    grafanaData: "/var/lib/grafana",
    /** Grafana's provisioning root (GF_PATHS_PROVISIONING): datasources/ and dashboards/ below it. */
    grafanaProvisioning: "/etc/openclaw/provisioning",
    grafanaDatasources: "/etc/openclaw/provisioning/datasources/prometheus.yml",
    grafanaDashboardProviders: "/etc/openclaw/provisioning/dashboards/openclaw.yml",
    grafanaDashboards: "/etc/openclaw/dashboards",
    grafanaDashboard: "/etc/openclaw/dashboards/openclaw.json",
    grafanaAdminPassword: "/etc/openclaw/admin-password",
    /** The UIs' certificate and key (Grafana, Uptime Kuma), signed by the monitoring CA. */
    uiCert: "/etc/openclaw/tls/ui.pem",
    uiKey: "/etc/openclaw/tls/ui-key.pem",
    uptimeKumaData: "/app/data",
} as const;

export interface ScrapeEndpoint {
    job: (typeof SCRAPE_JOBS)[keyof typeof SCRAPE_JOBS];
    /** host:port as the monitoring host dials it. */
    target: string;
}

export interface PrometheusConfigInput {
    stack: string;
    endpoints: ScrapeEndpoint[];
    caFile: string;
    tokenFile: string;
    rulesFile: string;
    /** Where Prometheus scrapes itself (its own listener). */
    selfTarget?: string;
}

/** prometheus.yml: the agents' host's metrics over HTTPS with a bearer token, its CA pinned; and Prometheus itself. */
export function prometheusConfig(input: PrometheusConfigInput): string {
    return stringify({
        global: { scrape_interval: "15s", scrape_timeout: "10s", evaluation_interval: "15s", external_labels: { stack: input.stack } },
        rule_files: [input.rulesFile],
        scrape_configs: [
            { job_name: "prometheus", static_configs: [{ targets: [input.selfTarget ?? `127.0.0.1:${PORTS.prometheus}`] }] },
            ...input.endpoints.map((endpoint) => ({
                job_name: endpoint.job,
                scheme: "https",
                metrics_path: "/metrics",
                authorization: { type: "Bearer", credentials_file: input.tokenFile },
                tls_config: { ca_file: input.caFile, min_version: "TLS12", insecure_skip_verify: false },
                static_configs: [{ targets: [endpoint.target] }],
            })),
        ],
    });
}

export interface AlertThresholds {
    /** Share of upstream responses that are 5xx, over 5 minutes. */
    errorRatio: number;
    egressDenialsPerMinute: number;
}

interface AlertRule {
    alert: string;
    expr: string;
    for: string;
    severity: "critical" | "warning";
    summary: string;
}

/** The alert rules, as data (the dashboard test parses these expressions the same way). */
export function alertRules(thresholds: AlertThresholds): AlertRule[] {
    const down = (job: string, what: string): AlertRule => ({
        alert: `${what.replace(/\s/g, "")}Down`,
        expr: `up{job="${job}"} == 0 or absent(up{job="${job}"})`,
        for: "2m",
        severity: "critical",
        summary: `${what} on the agents' host has not answered a scrape for 2 minutes`,
    });
    return [
        down(SCRAPE_JOBS.keyProxy, "KeyProxy"),
        down(SCRAPE_JOBS.egressGateway, "Egress Gateway"),
        {
            alert: "ScrapeFailing",
            expr: "avg_over_time(up[30m]) < 0.9",
            for: "10m",
            severity: "warning",
            summary: "More than 10% of the scrapes of {{ $labels.job }} failed in the last 30 minutes",
        },
        {
            alert: "KeyProxyUpstream5xx",
            expr: `sum by (agent, provider) (rate(keyproxy_requests_total{status="5xx"}[5m])) / sum by (agent, provider) (rate(keyproxy_requests_total[5m])) > ${thresholds.errorRatio}`,
            for: "5m",
            severity: "warning",
            summary: `More than ${thresholds.errorRatio * 100}% of {{ $labels.agent }}'s requests to {{ $labels.provider }} end in 5xx`,
        },
        {
            alert: "AgentBudgetAt80Percent",
            expr: "keyproxy_budget_limit_usd > 0 and keyproxy_budget_remaining_usd / keyproxy_budget_limit_usd <= 0.2 and keyproxy_budget_remaining_usd > 0",
            for: "0m",
            severity: "warning",
            summary: "{{ $labels.agent }} has used 80% of its {{ $labels.window }} budget",
        },
        {
            alert: "AgentBudgetExhausted",
            expr: "keyproxy_budget_limit_usd > 0 and keyproxy_budget_remaining_usd <= 0",
            for: "0m",
            severity: "critical",
            summary: "{{ $labels.agent }}'s {{ $labels.window }} budget is exhausted: its requests are refused",
        },
        {
            alert: "EgressDenialSpike",
            expr: `sum by (agent) (rate(egress_decisions_total{decision="deny"}[5m])) * 60 > ${thresholds.egressDenialsPerMinute}`,
            for: "2m",
            severity: "warning",
            summary: `{{ $labels.agent }} is denied more than ${thresholds.egressDenialsPerMinute} egress attempts a minute`,
        },
        {
            alert: "AgentContainerRestarting",
            expr: "increase(keyproxy_agent_restarts_total[15m]) > 0",
            for: "0m",
            severity: "warning",
            summary: "{{ $labels.agent }}'s container went away and came back in the last 15 minutes",
        },
        {
            alert: "AgentDown",
            expr: "keyproxy_agent_up == 0",
            for: "5m",
            severity: "critical",
            summary: "{{ $labels.agent }}'s gateway has not answered KeyProxy's probe for 5 minutes",
        },
    ];
}

/** The rule file Prometheus loads. */
export function alertRulesFile(thresholds: AlertThresholds): string {
    return stringify({
        groups: [
            {
                name: "openclaw",
                rules: alertRules(thresholds).map((rule) => ({
                    alert: rule.alert,
                    expr: rule.expr,
                    for: rule.for,
                    labels: { severity: rule.severity },
                    annotations: { summary: rule.summary },
                })),
            },
        ],
    });
}

export const DATASOURCE_UID = "openclaw-prometheus";

/** Grafana's datasource provisioning: the stack's Prometheus, reached on the monitoring network. */
export function grafanaDatasources(prometheusHost: string): string {
    return stringify({
        apiVersion: 1,
        deleteDatasources: [],
        datasources: [
            { name: "Prometheus", uid: DATASOURCE_UID, type: "prometheus", access: "proxy", url: `http://${prometheusHost}:${PORTS.prometheus}`, isDefault: true, editable: false },
        ],
    });
}

/** Grafana's dashboard provider: the generated dashboards, not editable in the UI (code is the source). */
export function grafanaDashboardProviders(): string {
    return stringify({
        apiVersion: 1,
        providers: [{ name: "openclaw", type: "file", disableDeletion: true, allowUiUpdates: false, options: { path: MONITORING_PATHS.grafanaDashboards } }],
    });
}

interface Panel {
    title: string;
    unit: string;
    /** PromQL and legend per series. */
    queries: { expr: string; legend: string }[];
}

const AGENT = 'agent=~"$agent"';
/** The dashboard's panels, as data; the PromQL of each is checked by promtool in the tests. */
export const DASHBOARD_PANELS: Panel[] = [
    {
        title: "Requests by agent and status",
        unit: "reqps",
        queries: [{ expr: `sum by (agent, status) (rate(keyproxy_requests_total{${AGENT}}[$__rate_interval]))`, legend: "{{agent}} {{status}}" }],
    },
    {
        title: "Request latency p50 / p99",
        unit: "s",
        queries: [0.5, 0.99].map((q) => ({
            expr: `histogram_quantile(${q}, sum by (le, agent) (rate(keyproxy_request_duration_seconds_bucket{${AGENT}}[$__rate_interval])))`,
            legend: `{{agent}} p${q * 100}`,
        })),
    },
    {
        title: "Upstream time to first byte p50 / p99",
        unit: "s",
        queries: [0.5, 0.99].map((q) => ({
            expr: `histogram_quantile(${q}, sum by (le, provider) (rate(keyproxy_upstream_ttfb_seconds_bucket{${AGENT}}[$__rate_interval])))`,
            legend: `{{provider}} p${q * 100}`,
        })),
    },
    { title: "Active streams", unit: "short", queries: [{ expr: `sum by (agent) (keyproxy_active_streams{${AGENT}})`, legend: "{{agent}}" }] },
    {
        title: "Tokens by agent",
        unit: "short",
        queries: [{ expr: `sum by (agent, kind) (increase(keyproxy_tokens_total{${AGENT}}[$__rate_interval]))`, legend: "{{agent}} {{kind}}" }],
    },
    { title: "Spend per hour by agent", unit: "currencyUSD", queries: [{ expr: `sum by (agent) (increase(keyproxy_spend_usd_total{${AGENT}}[1h]))`, legend: "{{agent}}" }] },
    { title: "Budget remaining", unit: "currencyUSD", queries: [{ expr: `keyproxy_budget_remaining_usd{${AGENT}}`, legend: "{{agent}} {{window}}" }] },
    {
        title: "Budget refusals",
        unit: "short",
        queries: [{ expr: `sum by (agent, reason) (increase(keyproxy_refusals_total{${AGENT}}[$__rate_interval]))`, legend: "{{agent}} {{reason}}" }],
    },
    {
        title: "Egress allowed and denied by agent and reason",
        unit: "short",
        queries: [{ expr: `sum by (agent, decision, reason) (increase(egress_decisions_total{${AGENT}}[$__rate_interval]))`, legend: "{{agent}} {{decision}} {{reason}}" }],
    },
    {
        title: "Services and agents up",
        unit: "short",
        queries: [
            { expr: `up{job=~"${SCRAPE_JOBS.keyProxy}|${SCRAPE_JOBS.egressGateway}"}`, legend: "{{job}}" },
            { expr: `keyproxy_agent_up{${AGENT}}`, legend: "agent {{agent}}" },
        ],
    },
];

/** The dashboard JSON, generated from DASHBOARD_PANELS: two panels a row, an agent selector. */
export function grafanaDashboard(stack: string): string {
    const datasource = { type: "prometheus", uid: DATASOURCE_UID };
    return JSON.stringify(
        {
            uid: `openclaw-${stack}`,
            title: `OpenClaw agents (${stack})`,
            tags: ["openclaw"],
            timezone: "utc",
            schemaVersion: 39,
            version: 1,
            refresh: "30s",
            time: { from: "now-6h", to: "now" },
            templating: {
                list: [
                    {
                        name: "agent",
                        label: "Agent",
                        type: "query",
                        datasource,
                        query: { query: "label_values(keyproxy_budget_limit_usd, agent)", refId: "agents" },
                        definition: "label_values(keyproxy_budget_limit_usd, agent)",
                        includeAll: true,
                        multi: true,
                        allValue: ".*",
                        current: { text: "All", value: "$__all" },
                        refresh: 2,
                    },
                ],
            },
            panels: DASHBOARD_PANELS.map((panel, index) => ({
                id: index + 1,
                type: "timeseries",
                title: panel.title,
                datasource,
                gridPos: { h: 8, w: 12, x: (index % 2) * 12, y: Math.floor(index / 2) * 8 },
                fieldConfig: { defaults: { unit: panel.unit }, overrides: [] },
                targets: panel.queries.map((query, q) => ({ refId: String.fromCharCode(65 + q), datasource, expr: query.expr, legendFormat: query.legend })),
            })),
        },
        null,
        2,
    );
}

export interface WatchedEndpoint {
    name: string;
    url: string;
    /** What a healthy answer looks like. */
    expect: string;
}

/** What Uptime Kuma should watch: each service's health from outside (a stack output; Kuma's own API is not provisioned). */
export function uptimeKumaWatchList(input: { scrapeEndpoints: ScrapeEndpoint[]; grafanaUrl: string }): WatchedEndpoint[] {
    return [
        ...input.scrapeEndpoints.map((endpoint) => ({ name: endpoint.job, url: `https://${endpoint.target}/healthz`, expect: "HTTP 200 with the metrics CA; /healthz needs no token" })),
        { name: "grafana", url: `${input.grafanaUrl}/api/health`, expect: "HTTP 200" },
    ];
}

export interface HostPreparation {
    sshPort: number;
    /** Host ports the monitoring host accepts besides SSH (Grafana, Uptime Kuma). */
    openPorts: number[];
}

const FIREWALL_TABLE = "openclaw_monitoring";
const DOCKER_FILTER_CHAIN = "OPENCLAW-MONITORING";

/**
 * The host preparation script, run as root over SSH: Docker present, and a firewall that accepts only SSH and
 * the chosen ports. Idempotent: each run replaces the table and chain it owns, whatever was there.
 * Docker-published ports are DNATed and forwarded, so INPUT never sees them: the same list filters new forwarded
 * connections in DOCKER-USER.
 */
export function hostPreparationScript(input: HostPreparation): string {
    const ports = [input.sshPort, ...input.openPorts];
    for (const port of ports) if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`not a port: ${port}`);
    const allowed = [...new Set(ports)].sort((a, b) => a - b);
    const published = [...new Set(input.openPorts)].sort((a, b) => a - b);
    return `#!/usr/bin/env bash
# OpenClaw monitoring host preparation (generated; re-run whenever it changes).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
if ((\${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "\${missing[@]}"
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl enable --now docker
fi

# Inbound: SSH and the chosen ports only. The table is ours: declared, emptied and refilled in one transaction.
nft -f - <<'NFT'
table inet ${FIREWALL_TABLE}
delete table inet ${FIREWALL_TABLE}
table inet ${FIREWALL_TABLE} {
    chain input {
        type filter hook input priority filter; policy drop;
        iif "lo" accept
        ct state established,related accept
        ct state invalid drop
        meta l4proto { icmp, ipv6-icmp } accept
        tcp dport { ${allowed.join(", ")} } accept
    }
}
NFT

# Forwarded to containers: only connections to the published ports.
iptables -N DOCKER-USER 2>/dev/null || true
iptables -N ${DOCKER_FILTER_CHAIN} 2>/dev/null || iptables -F ${DOCKER_FILTER_CHAIN}
${published.map((port) => `iptables -A ${DOCKER_FILTER_CHAIN} -p tcp -m conntrack --ctstate DNAT --ctorigdstport ${port} -j RETURN`).join("\n")}
iptables -A ${DOCKER_FILTER_CHAIN} -m conntrack --ctstate DNAT -j DROP
iptables -A ${DOCKER_FILTER_CHAIN} -j RETURN
iptables -C DOCKER-USER -j ${DOCKER_FILTER_CHAIN} 2>/dev/null || iptables -I DOCKER-USER 1 -j ${DOCKER_FILTER_CHAIN}
docker version --format 'docker {{.Server.Version}}'
echo "firewall: accepting tcp ${allowed.join(", ")}"
`;
}
