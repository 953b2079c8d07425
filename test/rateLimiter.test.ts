// The token buckets and the audit budget the services bound floods with (runtime/rateLimiter.ts).
import { describe, expect, it } from "vitest";
import { AuditBudget, RateLimiter } from "../runtime/rateLimiter";

describe("the rate limiter", () => {
    it("starts every bucket full again past its key bound, so varied keys cannot grow it without bound", () => {
        const limiter = new RateLimiter(0.001, 1, () => 0, 2);
        expect([limiter.take("a"), limiter.take("a"), limiter.take("b"), limiter.take("b")]).toEqual([true, false, true, false]);
        expect(limiter.take("a")).toBe(false);
        expect(limiter.take("c")).toBe(true);
        expect(limiter.take("a")).toBe(true);
    });

    it("lets a burst through, then refills at the rate, per user", () => {
        let now = 0;
        const limiter = new RateLimiter(2, 3, () => now);
        expect([1, 2, 3, 4].map(() => limiter.take("ann"))).toEqual([true, true, true, false]);
        expect(limiter.take("bob")).toBe(true);
        now = 499;
        expect(limiter.take("ann")).toBe(false);
        now = 500;
        expect(limiter.take("ann")).toBe(true);
        now = 100_000;
        expect([1, 2, 3, 4].map(() => limiter.take("ann"))).toEqual([true, true, true, false]);
    });
});

describe("the audit budget", () => {
    it("admits a burst per key, then leaves events out and counts them on the next one admitted", () => {
        let now = 0;
        const budget = new AuditBudget(1, 2, () => now);
        expect([1, 2, 3, 4, 5].map(() => budget.admit("bart"))).toEqual([0, 0, undefined, undefined, undefined]);
        expect(budget.admit("lisa")).toBe(0);
        now = 1000;
        expect(budget.admit("bart")).toBe(3);
        expect(budget.admit("bart")).toBeUndefined();
        now = 2000;
        expect(budget.admit("bart")).toBe(1);
    });

    it("forgets counts past its key bound, so varied keys cannot grow it without bound", () => {
        const budget = new AuditBudget(0.001, 1, () => 0, 2);
        expect(["a", "a", "b", "b", "c", "c"].map((key) => budget.admit(key))).toEqual([0, undefined, 0, undefined, 0, undefined]);
        // The third key left out cleared the counts of a and b: a starts again at 0.
        expect(budget.admit("a")).toBe(0);
    });
});
