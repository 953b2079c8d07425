// Budgets: reservations against calendar windows, settled to actual cost. Pure state; the ledger store
// makes it durable by replaying the same records.

import type { Budget } from "../../contracts/keyProxy";

export type { Budget };

export const WINDOWS = ["day", "month", "total"] as const;
export type Window = (typeof WINDOWS)[number];
/** The budget field that limits each window. */
export const LIMIT_FIELD: Record<Window, keyof Budget> = { day: "dailyUsd", month: "monthlyUsd", total: "totalUsd" };

export const usdToMicros = (usd: number) => Math.round(usd * 1_000_000);
export const microsToUsd = (micros: number) => micros / 1_000_000;

const formatters = new Map<string, Intl.DateTimeFormat>();
const lastKeys = new Map<string, { second: number; keys: Record<Window, string> }>();

/** The calendar window each instant falls in, in the given IANA time zone: day:2026-11-22, month:2026-11, total. */
export function windowKeys(now: Date, timeZone: string): Record<Window, string> {
    // Formatting a date in a zone is the costliest step of admission: do it at most once a second per zone
    // (zones change offset on whole minutes, so a second never straddles a day boundary).
    const second = Math.floor(now.getTime() / 1000);
    const cached = lastKeys.get(timeZone);
    if (cached?.second === second) return cached.keys;
    let formatter = formatters.get(timeZone);
    if (!formatter) {
        formatter = new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" });
        formatters.set(timeZone, formatter);
    }
    const date = formatter.format(now);
    const keys = { day: `day:${date}`, month: `month:${date.slice(0, 7)}`, total: "total" } as const;
    lastKeys.set(timeZone, { second, keys });
    return keys;
}

export type LedgerRecord =
    | { t: "reserve"; id: string; agent: string; micros: number; keys: string[]; at: number }
    | { t: "settle"; id: string; micros: number; at: number; recovered?: boolean }
    | { t: "balance"; agent: string; key: string; micros: number };

export type Admission = { ok: true; keys: string[] } | { ok: false; window: Window; limitMicros: number; usedMicros: number };

interface Reservation {
    agent: string;
    keys: string[];
    micros: number;
}

function add(table: Map<string, Map<string, number>>, agent: string, key: string, micros: number) {
    const windows = table.get(agent) ?? new Map<string, number>();
    windows.set(key, (windows.get(key) ?? 0) + micros);
    table.set(agent, windows);
}

export class BudgetLedger {
    /** agent -> window key -> settled micro-dollars */
    private readonly spent = new Map<string, Map<string, number>>();
    /** agent -> window key -> reserved, not yet settled micro-dollars (kept in step with `outstanding`) */
    private readonly reserved = new Map<string, Map<string, number>>();
    private readonly outstanding = new Map<string, Reservation>();

    /** Admits a request if, in every window the agent has a limit for, settled + reserved + this fits. */
    admit(agent: string, budget: Budget, micros: number, keys: Record<Window, string>): Admission {
        for (const window of WINDOWS) {
            const limit = budget[LIMIT_FIELD[window]];
            if (limit === undefined) continue;
            const limitMicros = usdToMicros(limit);
            const usedMicros = this.used(agent, keys[window]);
            if (usedMicros + micros > limitMicros) return { ok: false, window, limitMicros, usedMicros };
        }
        return { ok: true, keys: WINDOWS.map((w) => keys[w]) };
    }

    /** Settled plus outstanding spend of an agent in one window. */
    used(agent: string, key: string): number {
        return (this.spent.get(agent)?.get(key) ?? 0) + (this.reserved.get(agent)?.get(key) ?? 0);
    }

    settled(agent: string, key: string): number {
        return this.spent.get(agent)?.get(key) ?? 0;
    }

    outstandingCount(agent?: string): number {
        let count = 0;
        for (const r of this.outstanding.values()) if (agent === undefined || r.agent === agent) count++;
        return count;
    }

    outstandingIds(): string[] {
        return [...this.outstanding.keys()];
    }

    reservation(id: string): Reservation | undefined {
        return this.outstanding.get(id);
    }

    /** Applies a record: the live path and replay after a restart go through here alike. */
    apply(record: LedgerRecord): void {
        if (record.t === "reserve") {
            this.outstanding.set(record.id, { agent: record.agent, keys: record.keys, micros: record.micros });
            for (const key of record.keys) add(this.reserved, record.agent, key, record.micros);
        } else if (record.t === "settle") {
            const reservation = this.outstanding.get(record.id);
            if (!reservation) return;
            this.outstanding.delete(record.id);
            for (const key of reservation.keys) {
                add(this.reserved, reservation.agent, key, -reservation.micros);
                add(this.spent, reservation.agent, key, record.micros);
            }
        } else {
            add(this.spent, record.agent, record.key, record.micros);
        }
    }

    /** Settled totals as balance records: a compact snapshot to start a new ledger file from. */
    snapshot(): LedgerRecord[] {
        const records: LedgerRecord[] = [];
        for (const [agent, windows] of this.spent) for (const [key, micros] of windows) records.push({ t: "balance", agent, key, micros });
        return records;
    }
}
