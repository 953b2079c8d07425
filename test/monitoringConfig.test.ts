// The monitoring host's generated files, checked by the real tools: promtool for Prometheus's config, its rules
// and every PromQL expression of the dashboard; metric names against what the services actually export.
import { spawnSync } from "node:child_process";
import { stringify } from "yaml";
import { describe, expect, it } from "vitest";
import {
    DASHBOARD_PANELS,
    DATASOURCE_UID,
    SCRAPE_JOBS,
    alertRules,
    alertRulesFile,
    grafanaDashboard,
    grafanaDatasources,
    hostPreparationScript,
    prometheusConfig,
    uptimeKumaWatchList,
} from "../components/monitoringConfig";
import { egressMetrics } from "../egress-image/src/metrics";
import { keyProxyMetrics } from "../proxy-image/src/metrics";
import { promtool, writeFiles } from "./support/promtool";

const THRESHOLDS = { errorRatio: 0.05, egressDenialsPerMinute: 30 };
const ENDPOINTS = [
    { job: SCRAPE_JOBS.keyProxy, target: "agents.example.net:9464" },
    { job: SCRAPE_JOBS.egressGateway, target: "agents.example.net:9465" },
];

function generatedFiles(): Record<string, string> & { config: string } {
    const files = writeFiles({ "ca.pem": "placeholder", token: "placeholder", "rules.yml": alertRulesFile(THRESHOLDS) });
    const config = prometheusConfig({ stack: "dev", endpoints: ENDPOINTS, caFile: files["ca.pem"], tokenFile: files.token, rulesFile: files["rules.yml"] });
    return { ...files, ...writeFiles({ "prometheus.yml": config }), config };
}

/** Grafana's own variables, as Grafana substitutes them before the query reaches Prometheus. */
const asGrafanaSends = (expr: string) => expr.replaceAll("$__rate_interval", "1m").replaceAll("$agent", ".*");

describe("Prometheus config and rules", () => {
    it("pass promtool check config (which also checks the rule file it names)", () => {
        const { ok, output } = promtool("check", "config", generatedFiles()["prometheus.yml"]);
        expect(output).toContain("SUCCESS");
        expect(ok, output).toBe(true);
    });

    it("scrape the agents' host over HTTPS with the token file and the pinned CA, never skipping verification", () => {
        const { config } = generatedFiles();
        for (const endpoint of ENDPOINTS) {
            expect(config).toContain(`job_name: ${endpoint.job}`);
            expect(config).toContain(`- ${endpoint.target}`);
        }
        expect(config.match(/scheme: https/g)).toHaveLength(2);
        expect(config.match(/credentials_file: /g)).toHaveLength(2);
        expect(config.match(/ca_file: /g)).toHaveLength(2);
        expect(config).toContain("insecure_skip_verify: false");
    });

    it("pass promtool check rules, and promtool does catch a broken rule", () => {
        const { ok, output } = promtool("check", "rules", generatedFiles()["rules.yml"]);
        expect(ok, output).toBe(true);
        expect(output).toContain(`SUCCESS: ${alertRules(THRESHOLDS).length} rules found`);
        const broken = writeFiles({ "broken.yml": alertRulesFile(THRESHOLDS).replace("keyproxy_budget_remaining_usd <= 0", "keyproxy_budget_remaining_usd <= ") });
        expect(promtool("check", "rules", broken["broken.yml"]).ok).toBe(false);
    });

    it("cover every alert the issue asks for", () => {
        expect(alertRules(THRESHOLDS).map((r) => r.alert).sort()).toEqual(
            ["AgentBudgetAt80Percent", "AgentBudgetExhausted", "AgentContainerRestarting", "AgentDown", "EgressDenialSpike", "EgressGatewayDown", "KeyProxyDown", "KeyProxyUpstream5xx", "ScrapeFailing"].sort(),
        );
    });
});

describe("the Grafana dashboard", () => {
    const queries = DASHBOARD_PANELS.flatMap((panel) => panel.queries.map((q) => ({ panel: panel.title, expr: q.expr })));

    it("parses: every PromQL expression passes promtool (as recording rules)", () => {
        const rules = stringify({ groups: [{ name: "dashboard", rules: queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: asGrafanaSends(q.expr) })) }] });
        const { ok, output } = promtool("check", "rules", writeFiles({ "dashboard.yml": rules })["dashboard.yml"]);
        expect(ok, output).toBe(true);
        expect(output).toContain(`SUCCESS: ${queries.length} rules found`);
    });

    it("and the alert rules use only metrics KeyProxy and EgressGateway export", async () => {
        const exported = new Set<string>(["up"]);
        for (const registry of [keyProxyMetrics().registry, egressMetrics().registry]) {
            for (const metric of await registry.getMetricsAsJSON()) {
                exported.add(metric.name);
                if (String(metric.type) === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) exported.add(metric.name + suffix);
            }
        }
        const used = [...queries.map((q) => q.expr), ...alertRules(THRESHOLDS).map((r) => r.expr)].flatMap((expr) => expr.match(/\b(?:keyproxy|egress)_[a-z0-9_]+/g) ?? []);
        expect(used.length).toBeGreaterThan(10);
        expect(used.filter((name) => !exported.has(name))).toEqual([]);
    });

    it("shows requests, latency p50/p99, active streams, tokens, spend, budget remaining, egress decisions", () => {
        const all = queries.map((q) => q.expr).join("\n");
        for (const needle of ["keyproxy_requests_total", "histogram_quantile(0.5,", "histogram_quantile(0.99,", "keyproxy_active_streams", "keyproxy_tokens_total", "keyproxy_spend_usd_total", "keyproxy_budget_remaining_usd"]) {
            expect(all).toContain(needle);
        }
        expect(all).toMatch(/sum by \(agent, decision, reason\) \(increase\(egress_decisions_total/);
    });

    it("is valid JSON with one panel per definition, every target on the provisioned datasource", () => {
        const dashboard = JSON.parse(grafanaDashboard("dev"));
        expect(dashboard.uid).toBe("openclaw-dev");
        expect(dashboard.panels).toHaveLength(DASHBOARD_PANELS.length);
        for (const panel of dashboard.panels) for (const target of panel.targets) expect(target.datasource.uid).toBe(DATASOURCE_UID);
        expect(grafanaDatasources("prometheus")).toContain(`uid: ${DATASOURCE_UID}`);
        expect(grafanaDatasources("prometheus")).toContain("url: http://prometheus:9090");
    });
});

describe("Uptime Kuma's watch list", () => {
    it("names each metrics endpoint's /healthz (no token needed) and Grafana's health", () => {
        expect(uptimeKumaWatchList({ scrapeEndpoints: ENDPOINTS, grafanaUrl: "http://203.0.113.7:3000" }).map((w) => w.url)).toEqual([
            "https://agents.example.net:9464/healthz",
            "https://agents.example.net:9465/healthz",
            "http://203.0.113.7:3000/api/health",
        ]);
    });
});

describe("the host preparation script", () => {
    const script = hostPreparationScript({ sshPort: 2222, openPorts: [3001, 3000] });

    it("is valid bash", () => {
        const run = spawnSync("bash", ["-n"], { input: script, encoding: "utf8" });
        expect(run.stderr).toBe("");
        expect(run.status).toBe(0);
    });

    it("drops inbound by default and accepts SSH and the chosen ports only", () => {
        expect(script).toContain("policy drop;");
        expect(script.match(/tcp dport \{ ([^}]*) \} accept/)?.[1]).toBe("2222, 3000, 3001");
    });

    it.each([[0], [70000], [1.5]])("refuses port %s", (port) => {
        expect(() => hostPreparationScript({ sshPort: 22, openPorts: [port] })).toThrow(/not a port/);
    });
});
