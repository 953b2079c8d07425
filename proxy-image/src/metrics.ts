import { Counter, type CounterConfiguration, Gauge, type GaugeConfiguration, Histogram, type HistogramConfiguration, type LabelValues, Registry, collectDefaultMetrics } from "prom-client";

/** Called at scrape time, so gauges that describe state cost nothing per request. */
export interface ScrapeHooks {
    budgets?: () => void;
    /** Access and event lines the log buffer dropped because stdout was not read fast enough. */
    logLinesDropped?: () => number;
}

/** One labelled series counted in memory: what a request does to its metrics costs an addition, no label hashing. */
export class Tally<L extends string = string> {
    value = 0;
    /** Changed since prom-client last read it. */
    touched = false;

    constructor(readonly labels: LabelValues<L>) {}

    inc(amount = 1) {
        this.value += amount;
        this.touched = true;
    }

    dec(amount = 1) {
        this.value -= amount;
        this.touched = true;
    }
}

/** One series of a metric per label values, made on first use and kept for the life of the process (as prom-client keeps its series). */
class SeriesByLabels<L extends string, S> {
    private readonly byValues = new Map<string, S>();

    constructor(
        private readonly labelNames: readonly L[],
        private readonly make: (labels: LabelValues<L>) => S,
    ) {}

    /** The series of these label values, given in the metric's label order. */
    of(...values: string[]): S {
        const key = values.join("\u0000");
        let series = this.byValues.get(key);
        if (!series) {
            series = this.make(Object.fromEntries(this.labelNames.map((name, i) => [name, values[i]])) as LabelValues<L>);
            this.byValues.set(key, series);
        }
        return series;
    }

    all(): IterableIterator<S> {
        return this.byValues.values();
    }
}

/** The tallies of one metric; `hand` gives prom-client what changed each time the metric is read (a scrape). */
class Tallies<L extends string> extends SeriesByLabels<L, Tally<L>> {
    constructor(labelNames: readonly L[]) {
        super(labelNames, (labels) => new Tally(labels));
    }

    hand(take: (tally: Tally<L>) => void) {
        for (const tally of this.all()) {
            if (!tally.touched) continue;
            take(tally);
            tally.touched = false;
        }
    }
}

/**
 * A prom-client Counter fed by tallies: prom-client hashes a series' labels on every inc, even through a child;
 * these add in memory and hand their sums over when the counter is read, so a scrape sees every count.
 */
function talliedCounter<L extends string>(config: CounterConfiguration<L> & { labelNames: readonly L[] }, unitsPerValue = 1) {
    const tallies = new Tallies(config.labelNames);
    const counter = new Counter<L>({
        ...config,
        collect() {
            tallies.hand((tally) => {
                this.inc(tally.labels, tally.value / unitsPerValue);
                tally.value = 0;
            });
        },
    });
    return Object.assign(counter, { tally: (...values: string[]) => tallies.of(...values) });
}

/** One labelled histogram series counted in memory: an observation costs a bucket search and three additions. */
export class HistogramTally {
    /** Observations per bucket (not cumulative); past the last bound they count in `count` only, as +Inf. */
    readonly counts: number[];
    sum = 0;
    count = 0;

    constructor(
        readonly labels: LabelValues<string>,
        private readonly bounds: readonly number[],
    ) {
        this.counts = bounds.map(() => 0);
    }

    observe(value: number) {
        const { bounds } = this;
        for (let i = 0; i < bounds.length; i++) {
            if (value <= bounds[i]) {
                this.counts[i]++;
                break;
            }
        }
        this.sum += value;
        this.count++;
    }
}

/**
 * A prom-client Histogram whose series are tallies: prom-client's `observe` validates and hashes the labels and
 * allocates on every call, even through a child. Read by prom-client's own exposition (the same lines).
 */
class TalliedHistogram<L extends string> extends Histogram<L> {
    private readonly series: SeriesByLabels<L, HistogramTally>;

    constructor(
        private readonly config: HistogramConfiguration<L> & { labelNames: readonly L[]; buckets: number[] },
    ) {
        super(config);
        this.series = new SeriesByLabels(config.labelNames, (labels) => new HistogramTally(labels, config.buckets));
    }

    /** The tally of these label values, given in the metric's label order. */
    tally(...values: string[]): HistogramTally {
        return this.series.of(...values);
    }

    /** prom-client's exposition reads this: each series' cumulative buckets, +Inf, sum and count, as Histogram gives them. */
    async getForPromString() {
        const { name } = this.config;
        const values: { labels: LabelValues<string>; sharedLabels: LabelValues<string>; value: number; metricName: string }[] = [];
        for (const tally of this.series.all()) {
            // As prom-client: a series appears once observed.
            if (tally.count === 0) continue;
            let cumulative = 0;
            this.config.buckets.forEach((le, i) => {
                cumulative += tally.counts[i];
                values.push({ labels: { le }, sharedLabels: tally.labels, value: cumulative, metricName: `${name}_bucket` });
            });
            values.push(
                { labels: { le: "+Inf" }, sharedLabels: tally.labels, value: tally.count, metricName: `${name}_bucket` },
                { labels: {}, sharedLabels: tally.labels, value: tally.sum, metricName: `${name}_sum` },
                { labels: {}, sharedLabels: tally.labels, value: tally.count, metricName: `${name}_count` },
            );
        }
        return { name, help: this.config.help, type: "histogram", values, aggregator: "sum" };
    }
}

/** A prom-client Gauge fed by tallies: each tally is its series' level, set when the gauge is read. */
function talliedGauge<L extends string>(config: GaugeConfiguration<L> & { labelNames: readonly L[] }) {
    const tallies = new Tallies(config.labelNames);
    const gauge = new Gauge<L>({ ...config, collect() { tallies.hand((tally) => this.set(tally.labels, tally.value)); } });
    return Object.assign(gauge, { tally: (...values: string[]) => tallies.of(...values) });
}

export function keyProxyMetrics() {
    const registry = new Registry();
    const hooks: ScrapeHooks = {};
    collectDefaultMetrics({ register: registry, prefix: "keyproxy_" });
    const labelNames = ["agent", "provider"] as const;
    return {
        registry,
        requests: talliedCounter({ name: "keyproxy_requests_total", help: "Requests by agent, provider and status class", labelNames: [...labelNames, "status"], registers: [registry] }),
        refusals: new Counter({ name: "keyproxy_refusals_total", help: "Requests refused or dropped by the proxy, by reason", labelNames: [...labelNames, "reason"], registers: [registry] }),
        upstreamErrors: new Counter({ name: "keyproxy_upstream_errors_total", help: "Upstream failures by kind", labelNames: [...labelNames, "kind"], registers: [registry] }),
        duration: new TalliedHistogram({
            name: "keyproxy_request_duration_seconds",
            help: "Whole request duration, including streaming",
            labelNames: [...labelNames],
            buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
            registers: [registry],
        }),
        ttfb: new TalliedHistogram({
            name: "keyproxy_upstream_ttfb_seconds",
            help: "Time to the upstream's response headers",
            labelNames: [...labelNames],
            buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
            registers: [registry],
        }),
        activeStreams: talliedGauge({ name: "keyproxy_active_streams", help: "Requests in flight", labelNames, registers: [registry] }),
        bytesIn: talliedCounter({ name: "keyproxy_request_bytes_total", help: "Request body bytes sent upstream", labelNames, registers: [registry] }),
        bytesOut: talliedCounter({ name: "keyproxy_response_bytes_total", help: "Response body bytes sent to agents", labelNames, registers: [registry] }),
        registeredAgents: new Gauge({ name: "keyproxy_registered_agents", help: "Agents in the registry", registers: [registry] }),
        tokens: talliedCounter({ name: "keyproxy_tokens_total", help: "Tokens billed, by agent, provider, model and kind", labelNames: [...labelNames, "model", "kind"], registers: [registry] }),
        // Tallied in micro-dollars (exact integers), read as USD.
        spend: talliedCounter({ name: "keyproxy_spend_usd_total", help: "Settled spend in USD, by agent, provider and model", labelNames: [...labelNames, "model"], registers: [registry] }, 1_000_000),
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
        auditEvents: new Counter({ name: "keyproxy_audit_events_total", help: "Security events given to the audit stream, by type", labelNames: ["type"], registers: [registry] }),
        auditUnaudited: new Counter({ name: "keyproxy_audit_unaudited_total", help: "Security events left out of the audit stream past a source's audit budget, by type", labelNames: ["type"], registers: [registry] }),
        auditFailures: new Counter({ name: "keyproxy_audit_write_failures_total", help: "Audit events lost to a failed write", registers: [registry] }),
        unknownModels: new Counter({ name: "keyproxy_unknown_model_requests_total", help: "Requests for models missing from the price table, billed at the fallback price", labelNames: labelNames, registers: [registry] }),
    };
}

export type KeyProxyMetrics = ReturnType<typeof keyProxyMetrics>;

/** The series of one agent and provider: label hashing once, not on every request. */
export function streamMetrics(metrics: KeyProxyMetrics, agent: string, provider: string) {
    const labels = { agent, provider };
    const byStatusClass = new Map<number, Tally>();
    return {
        labels,
        duration: metrics.duration.tally(agent, provider),
        ttfb: metrics.ttfb.tally(agent, provider),
        active: metrics.activeStreams.tally(agent, provider),
        bytesIn: metrics.bytesIn.tally(agent, provider),
        bytesOut: metrics.bytesOut.tally(agent, provider),
        requests(status: number) {
            const statusClass = Math.floor(status / 100);
            let tally = byStatusClass.get(statusClass);
            if (!tally) {
                tally = metrics.requests.tally(agent, provider, `${statusClass}xx`);
                byStatusClass.set(statusClass, tally);
            }
            return tally;
        },
    };
}

export type StreamMetrics = ReturnType<typeof streamMetrics>;
