import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Called at scrape time, so gauges that describe state cost nothing per request. */
export interface ScrapeHooks {
    budgets?: () => void;
    /** Access and event lines the log buffer dropped because stdout was not read fast enough. */
    logLinesDropped?: () => number;
}

export function keyProxyMetrics() {
    const registry = new Registry();
    const hooks: ScrapeHooks = {};
    collectDefaultMetrics({ register: registry, prefix: "keyproxy_" });
    const labelNames = ["agent", "provider"] as const;
    return {
        registry,
        requests: new Counter({ name: "keyproxy_requests_total", help: "Requests by agent, provider and status class", labelNames: [...labelNames, "status"], registers: [registry] }),
        refusals: new Counter({ name: "keyproxy_refusals_total", help: "Requests refused or dropped by the proxy, by reason", labelNames: [...labelNames, "reason"], registers: [registry] }),
        upstreamErrors: new Counter({ name: "keyproxy_upstream_errors_total", help: "Upstream failures by kind", labelNames: [...labelNames, "kind"], registers: [registry] }),
        duration: new Histogram({
            name: "keyproxy_request_duration_seconds",
            help: "Whole request duration, including streaming",
            labelNames,
            buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
            registers: [registry],
        }),
        ttfb: new Histogram({
            name: "keyproxy_upstream_ttfb_seconds",
            help: "Time to the upstream's response headers",
            labelNames,
            buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
            registers: [registry],
        }),
        activeStreams: new Gauge({ name: "keyproxy_active_streams", help: "Requests in flight", labelNames, registers: [registry] }),
        bytesIn: new Counter({ name: "keyproxy_request_bytes_total", help: "Request body bytes sent upstream", labelNames, registers: [registry] }),
        bytesOut: new Counter({ name: "keyproxy_response_bytes_total", help: "Response body bytes sent to agents", labelNames, registers: [registry] }),
        registeredAgents: new Gauge({ name: "keyproxy_registered_agents", help: "Agents in the registry", registers: [registry] }),
        tokens: new Counter({ name: "keyproxy_tokens_total", help: "Tokens billed, by agent, provider, model and kind", labelNames: [...labelNames, "model", "kind"], registers: [registry] }),
        spend: new Counter({ name: "keyproxy_spend_usd_total", help: "Settled spend in USD, by agent, provider and model", labelNames: [...labelNames, "model"], registers: [registry] }),
        hooks,
        budgetRemaining: new Gauge({
            name: "keyproxy_budget_remaining_usd",
            help: "Budget left in the current window (limit minus settled and reserved)",
            labelNames: ["agent", "window"],
            registers: [registry],
            collect: () => hooks.budgets?.(),
        }),
        budgetLimit: new Gauge({ name: "keyproxy_budget_limit_usd", help: "Budget of the current window", labelNames: ["agent", "window"], registers: [registry] }),
        reservations: new Gauge({ name: "keyproxy_reservations_outstanding", help: "Reservations not yet settled", labelNames: ["agent"], registers: [registry] }),
        agentUp: new Gauge({ name: "keyproxy_agent_up", help: "Whether the agent's container answers on its gateway port (1) or not (0)", labelNames: ["agent"], registers: [registry] }),
        agentRestarts: new Counter({ name: "keyproxy_agent_restarts_total", help: "Times the agent's container went away and came back", labelNames: ["agent"], registers: [registry] }),
        logLinesDropped: new Counter({
            name: "keyproxy_log_lines_dropped_total",
            help: "Log lines dropped because stdout was not read fast enough (the log buffer was full)",
            registers: [registry],
            collect() {
                this.reset();
                this.inc(hooks.logLinesDropped?.() ?? 0);
            },
        }),
        unknownModels: new Counter({ name: "keyproxy_unknown_model_requests_total", help: "Requests for models missing from the price table, billed at the fallback price", labelNames: labelNames, registers: [registry] }),
    };
}

export type KeyProxyMetrics = ReturnType<typeof keyProxyMetrics>;

/** Metric children bound to one agent and provider: label hashing once, not on every request. */
export function streamMetrics(metrics: KeyProxyMetrics, agent: string, provider: string) {
    const labels = { agent, provider };
    const byStatus = new Map<string, ReturnType<KeyProxyMetrics["requests"]["labels"]>>();
    return {
        labels,
        duration: metrics.duration.labels(labels),
        ttfb: metrics.ttfb.labels(labels),
        active: metrics.activeStreams.labels(labels),
        bytesIn: metrics.bytesIn.labels(labels),
        bytesOut: metrics.bytesOut.labels(labels),
        requests(status: number) {
            const statusClass = `${Math.floor(status / 100)}xx`;
            let child = byStatus.get(statusClass);
            if (!child) {
                child = metrics.requests.labels({ ...labels, status: statusClass });
                byStatus.set(statusClass, child);
            }
            return child;
        },
    };
}

export type StreamMetrics = ReturnType<typeof streamMetrics>;
