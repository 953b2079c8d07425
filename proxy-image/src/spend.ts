// Spend tracking: reserve before a metered request goes upstream, settle when its response ends, keep the
// ledger durable, and report tokens, spend and budgets as metrics.
//
// Durability comes from budget leases. Admission is exact and in memory (every request's maximum cost against
// settled + reserved, as before). What goes to disk is a lease: a slice of the agent's budget (`leaseUsd`, or the
// request's maximum when larger, never more than the budget has room for), written as a reservation and fsynced
// before the first request it covers goes upstream. Requests that fit in the open lease are reserved and settled in
// memory only. A lease is returned (settled to what its requests cost) when it is used up, when the window changes,
// after LEASE_IDLE_MS without requests, and at shutdown; after a crash, replay counts an open lease in full. So a
// crash over-counts an agent by at most its open lease's unused part, and never under-counts.
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
    lease: Lease;
}

/** A lease with no request for this long is returned, so its unused part stops counting. */
export const LEASE_IDLE_MS = 2000;

/** A slice of one agent's budget, durable on disk as a reservation, spent in memory. */
export interface Lease {
    id: string;
    agent: string;
    keys: string[];
    micros: number;
    /** What it must cover: the maxima of its requests in flight plus the costs of those settled. */
    covered: number;
    /** Costs settled on it: what its settlement will record. */
    spent: number;
    inFlight: number;
    lastUsed: number;
    /** Takes no new request; returned once its last request settles. */
    retired: boolean;
    /** Its reservation could not be written: nothing on disk to settle. */
    failed: boolean;
    /** Its settlement is written (or on its way). */
    returned: boolean;
    /** Resolves once its reservation is on disk. */
    written: Promise<void>;
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
    /** Agent -> the lease new requests are reserved on. */
    private readonly leases = new Map<string, Lease>();
    private readonly leaseMicros: number;
    private readonly idleSweep: NodeJS.Timeout;
    /** In-memory ids of request reservations (never written: only leases reach the disk). */
    private nextTicket = 0;

    constructor(
        private readonly config: RuntimeConfig,
        private readonly metrics: KeyProxyMetrics,
        private readonly log: Logger,
        private readonly now: () => Date = () => new Date(),
    ) {
        for (const provider of Object.keys(config.upstreams)) this.books.set(provider, priceBook(config, provider));
        this.leaseMicros = usdToMicros(config.metering.leaseUsd);
        this.idleSweep = setInterval(() => this.returnIdleLeases(), LEASE_IDLE_MS).unref();
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

    /** Reserves the request's maximum cost, durably (on a lease), or says which window it does not fit. */
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
        const lease = this.leaseFor(agent, admission.keys, reservedMicros);
        const ticket: Ticket = { id: `r${++this.nextTicket}`, agent, provider, model: plan.model, reservedMicros, lease };
        this.ledger.apply({ t: "reserve", id: ticket.id, agent: agent.name, micros: reservedMicros, keys: admission.keys, at: 0 });
        lease.covered += reservedMicros;
        lease.inFlight++;
        try {
            await lease.written;
        } catch (error) {
            // Not on disk (a full or read-only volume): fail closed, do not forward. Release it in memory (nothing was committed).
            this.ledger.apply({ t: "settle", id: ticket.id, micros: 0, at: 0 });
            lease.covered -= reservedMicros;
            lease.inFlight--;
            this.log("ledger_unavailable", { agent: agent.name, code: (error as NodeJS.ErrnoException).code ?? null, error: (error as Error).message.slice(0, 200) });
            return { ok: false, refusal: "ledger" };
        }
        return { ok: true, ticket };
    }

    /** The agent's open lease if this reservation fits in it (same window), else a new one, its record on its way to disk. */
    private leaseFor(agent: AgentEntry, keys: string[], reservedMicros: number): Lease {
        const current = this.leases.get(agent.name);
        // keys[0] is the day, which implies the month: a lease never spans a window boundary.
        if (current && !current.retired && current.keys[0] === keys[0] && current.covered + reservedMicros <= current.micros) {
            current.lastUsed = Date.now();
            return current;
        }
        if (current) this.retire(current);
        const micros = Math.min(this.room(agent, keys), Math.max(this.leaseMicros, reservedMicros));
        const id = randomUUID();
        const lease: Lease = {
            id,
            agent: agent.name,
            keys,
            micros,
            covered: 0,
            spent: 0,
            inFlight: 0,
            lastUsed: Date.now(),
            retired: this.leaseMicros === 0,
            failed: false,
            returned: false,
            written: this.store.append({ t: "reserve", id, agent: agent.name, micros, keys, at: Date.now() }, "now"),
        };
        lease.written.catch(() => {
            lease.failed = true;
            void this.retire(lease);
        });
        // With leaseUsd 0 every lease is one request's own, retired from the start.
        if (!lease.retired) this.leases.set(agent.name, lease);
        return lease;
    }

    /**
     * What the agent's tightest window has left after settled spend and the reservations in flight (this request's
     * not yet among them): a lease never holds more than the budget has room for.
     */
    private room(agent: AgentEntry, keys: string[]): number {
        let room = Number.POSITIVE_INFINITY;
        WINDOWS.forEach((window, i) => {
            const limit = agent.budget?.[LIMIT_FIELD[window]];
            if (limit !== undefined) room = Math.min(room, usdToMicros(limit) - this.ledger.used(agent.name, keys[i]));
        });
        return room;
    }

    private retire(lease: Lease): Promise<void> {
        lease.retired = true;
        if (this.leases.get(lease.agent) === lease) this.leases.delete(lease.agent);
        return lease.inFlight === 0 ? this.returnLease(lease) : Promise.resolve();
    }

    /** Settles a lease to what its requests cost: the unused part is the agent's again, on disk too. */
    private returnLease(lease: Lease): Promise<void> {
        if (lease.failed || lease.returned) return Promise.resolve();
        lease.returned = true;
        // A settlement rides on the next sync (within LAZY_SYNC_MS): until then a crash counts the lease in full,
        // which over-counts and never under-counts.
        return this.store.append({ t: "settle", id: lease.id, micros: lease.spent, at: Date.now() }, "soon");
    }

    private returnIdleLeases() {
        const idleSince = Date.now() - LEASE_IDLE_MS;
        for (const lease of [...this.leases.values()]) if (lease.inFlight === 0 && lease.lastUsed <= idleSince) void this.retire(lease).catch(() => undefined);
    }

    /**
     * Settles a reservation to what the response cost (upstream errors and failures cost nothing). The cost
     * counts at once; `committed` resolves when it is on disk (with its lease's settlement, or at once while the
     * lease is open: the lease already covers it).
     */
    settle(ticket: Ticket, status: number, result: MeterResult | undefined): { cost: number; committed: Promise<void> } {
        const billable = status >= 200 && status < 400 && result !== undefined;
        const model = result?.model ?? ticket.model;
        const { price, known } = this.price(ticket.provider, model);
        const cost = !billable ? 0 : result.unmeasured ? ticket.reservedMicros : costMicros(result.usage, price);
        if (cost > ticket.reservedMicros) this.log("settled_above_reservation", { agent: ticket.agent.name, reserved_usd: microsToUsd(ticket.reservedMicros), cost_usd: microsToUsd(cost) });
        if (result && result.problems.length > 0) this.log("metering_problem", { agent: ticket.agent.name, provider: ticket.provider, problems: result.problems.join("; "), billed_usd: microsToUsd(cost) });
        this.ledger.apply({ t: "settle", id: ticket.id, micros: cost, at: 0 });
        const { lease } = ticket;
        lease.covered += cost - ticket.reservedMicros;
        lease.spent += cost;
        lease.inFlight--;
        lease.lastUsed = Date.now();
        const agent = ticket.agent.name;
        const modelLabel = known ? model : "other";
        if (billable) {
            const { usage } = result;
            const tokens = (kind: string, count: number) => count > 0 && this.metrics.tokens.tally(agent, ticket.provider, modelLabel, kind).inc(count);
            tokens("input", usage.input);
            tokens("output", usage.output);
            tokens("cache_write", usage.cacheWrite + usage.cacheWrite1h);
            tokens("cache_read", usage.cacheRead);
        }
        // In micro-dollars, exact: the counter reads them as USD.
        this.metrics.spend.tally(agent, ticket.provider, modelLabel).inc(cost);
        // A cost above its maximum may overrun the lease: return it as soon as it is free, so the excess reaches the disk.
        if (lease.covered > lease.micros) lease.retired = true;
        return { cost, committed: lease.retired ? this.retire(lease) : Promise.resolve() };
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

    /** Returns every lease no request is using (one in use stays open: replay counts it in full), then closes the ledger. */
    async close(): Promise<void> {
        clearInterval(this.idleSweep);
        for (const lease of [...this.leases.values()]) if (lease.inFlight === 0) void this.retire(lease).catch(() => undefined);
        await this.store.close();
    }
}
