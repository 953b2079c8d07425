// Spend tracking: reserve before a metered request goes upstream, settle when its response ends, keep the
// ledger durable, and report tokens, spend and budgets as metrics.
import { randomUUID } from "node:crypto";
import type { Logger } from "../../runtime/log";
import { BudgetLedger, LIMIT_FIELD, WINDOWS, type Window, microsToUsd, usdToMicros, windowKeys } from "./budget";
import { type RuntimeConfig, priceBook } from "./config";
import { LedgerStore } from "./ledgerStore";
import type { MeterResult, RequestPlan } from "./metering";
import type { KeyProxyMetrics } from "./metrics";
import type { AgentEntry } from "./policy";
import { type Price, type PriceBook, costMicros, maxCostMicros, priceFor } from "./pricing";

export interface Ticket {
    id: string;
    agent: AgentEntry;
    provider: string;
    model: string;
    reservedMicros: number;
}


export class SpendTracker {
    private readonly ledger = new BudgetLedger();
    private readonly store: LedgerStore;
    /** Each provider's price book (its own prices over the shared table). */
    private readonly books = new Map<string, PriceBook>();
    /** Agents seen, for the budget gauges computed at scrape time. */
    private readonly agents = new Map<string, AgentEntry>();
    /** Provider and model id -> price; agents choose model strings, so the cache is bounded. */
    private readonly prices = new Map<string, { price: Price; known: boolean }>();

    constructor(
        private readonly config: RuntimeConfig,
        private readonly metrics: KeyProxyMetrics,
        private readonly log: Logger,
        private readonly now: () => Date = () => new Date(),
    ) {
        for (const provider of Object.keys(config.upstreams)) this.books.set(provider, priceBook(config, provider));
        metrics.hooks.budgets = () => {
            for (const agent of this.agents.values()) this.refresh(agent);
        };
        // Replay; a reservation left open by a crash is settled at its full amount: the upstream may have
        // served it, and spend must never be under-counted.
        this.store = LedgerStore.open(
            config.metering.ledgerFile,
            (records) => {
                for (const record of records) this.ledger.apply(record);
                for (const id of this.ledger.outstandingIds()) {
                    const open = this.ledger.reservation(id)!;
                    this.ledger.apply({ t: "settle", id, micros: open.micros, at: Date.now(), recovered: true });
                    this.log("ledger_recovered_reservation", { agent: open.agent, usd: microsToUsd(open.micros) });
                }
                this.log("ledger_replayed", { records: records.length });
                return this.ledger.snapshot();
            },
            (tail) => this.log("ledger_torn_tail", { line: tail.line, bytes: tail.bytes, note: "an uncommitted last record from a crash, kept beside the ledger" }),
        );
    }

    price(provider: string, model: string): { price: Price; known: boolean } {
        const key = `${provider}\u0000${model}`;
        let found = this.prices.get(key);
        if (!found) {
            if (this.prices.size >= 1000) this.prices.clear();
            found = priceFor(this.books.get(provider) ?? priceBook(this.config), model);
            this.prices.set(key, found);
        }
        return found;
    }

    /** Agents whose budgets the metrics report. */
    track(agents: readonly AgentEntry[]) {
        this.agents.clear();
        for (const agent of agents) this.agents.set(agent.name, agent);
    }

    /** Reserves the request's maximum cost, durably, or says which window it does not fit. */
    async reserve(
        agent: AgentEntry,
        provider: string,
        plan: Extract<RequestPlan, { kind: "metered" }>,
    ): Promise<{ ok: true; ticket: Ticket } | { ok: false; refusal: "budget"; window: Window } | { ok: false; refusal: "ledger" }> {
        const { price, known } = this.price(provider, plan.model);
        if (!known) {
            this.metrics.unknownModels.inc({ agent: agent.name, provider });
            this.log("unknown_model", { agent: agent.name, provider, model: plan.model.slice(0, 100), note: "billed at the fallback price" });
        }
        const reservedMicros = maxCostMicros(plan.body.length, plan.maxOutputTokens, price);
        const admission = this.ledger.admit(agent.name, agent.budget ?? {}, reservedMicros, windowKeys(this.now(), this.config.metering.timeZone));
        if (!admission.ok) {
            this.log("budget_refused", { agent: agent.name, window: admission.window, limit_usd: microsToUsd(admission.limitMicros), used_usd: microsToUsd(admission.usedMicros), request_max_usd: microsToUsd(reservedMicros) });
            return { ok: false, refusal: "budget", window: admission.window };
        }
        const ticket: Ticket = { id: randomUUID(), agent, provider, model: plan.model, reservedMicros };
        const record = { t: "reserve" as const, id: ticket.id, agent: agent.name, micros: reservedMicros, keys: admission.keys, at: Date.now() };
        this.ledger.apply(record);
        try {
            await this.store.append(record, "now");
        } catch (error) {
            // Not on disk (a full or read-only volume): fail closed, do not forward. Release it in memory (nothing was committed).
            this.ledger.apply({ t: "settle", id: ticket.id, micros: 0, at: Date.now() });
            this.log("ledger_unavailable", { agent: agent.name, code: (error as NodeJS.ErrnoException).code ?? null, error: (error as Error).message.slice(0, 200) });
            return { ok: false, refusal: "ledger" };
        }
        return { ok: true, ticket };
    }

    /**
     * Settles a reservation to what the response cost (upstream errors and failures cost nothing). The cost
     * counts at once; `committed` resolves when the settlement is on disk.
     */
    settle(ticket: Ticket, status: number, result: MeterResult | undefined): { cost: number; committed: Promise<void> } {
        const billable = status >= 200 && status < 400 && result !== undefined;
        const model = result?.model ?? ticket.model;
        const { price, known } = this.price(ticket.provider, model);
        const cost = !billable ? 0 : result.unmeasured ? ticket.reservedMicros : costMicros(result.usage, price);
        if (cost > ticket.reservedMicros) this.log("settled_above_reservation", { agent: ticket.agent.name, reserved_usd: microsToUsd(ticket.reservedMicros), cost_usd: microsToUsd(cost) });
        if (result && result.problems.length > 0) this.log("metering_problem", { agent: ticket.agent.name, provider: ticket.provider, problems: result.problems.join("; "), billed_usd: microsToUsd(cost) });
        const record = { t: "settle" as const, id: ticket.id, micros: cost, at: Date.now() };
        this.ledger.apply(record);
        const labels = { agent: ticket.agent.name, provider: ticket.provider, model: known ? model : "other" };
        if (billable) {
            const { usage } = result;
            for (const [kind, count] of Object.entries({ input: usage.input, output: usage.output, cache_write: usage.cacheWrite + usage.cacheWrite1h, cache_read: usage.cacheRead })) {
                if (count > 0) this.metrics.tokens.inc({ ...labels, kind }, count);
            }
        }
        this.metrics.spend.inc(labels, microsToUsd(cost));
        // A settlement rides on the next sync (within LAZY_SYNC_MS): until then a crash would settle its
        // reservation at the full amount, which over-counts and never under-counts.
        return { cost, committed: this.store.append(record, "soon") };
    }

    /** Budget gauges of one agent for the windows it has a limit in. */
    private refresh(agent: AgentEntry) {
        const keys = windowKeys(this.now(), this.config.metering.timeZone);
        for (const window of WINDOWS) {
            const limit = agent.budget?.[LIMIT_FIELD[window]];
            if (limit === undefined) continue;
            const used = this.ledger.used(agent.name, keys[window]);
            this.metrics.budgetLimit.set({ agent: agent.name, window }, limit);
            this.metrics.budgetRemaining.set({ agent: agent.name, window }, microsToUsd(usdToMicros(limit) - used));
        }
        this.metrics.reservations.set({ agent: agent.name }, this.ledger.outstandingCount(agent.name));
    }

    /** Settled spend of an agent in the window holding `at`. */
    settled(agent: string, window: Window, at = this.now()): number {
        return microsToUsd(this.ledger.settled(agent, windowKeys(at, this.config.metering.timeZone)[window]));
    }

    close(): Promise<void> {
        return this.store.close();
    }
}
