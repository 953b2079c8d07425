// The open-loop generator of bench/ingress.mts: which requests are due when, and that every one is sent and
// accounted for. Nothing about speed is asserted.
import { describe, expect, it } from "vitest";
import { arrivalsDue, runFixedRate, scheduledAt } from "../bench/fixedRate.mts";

describe("arrivalsDue", () => {
    it.each([
        // elapsed ms, rate/s, total, due
        [-1, 200, 1000, 0],
        [0, 200, 1000, 1],
        [4.999, 200, 1000, 1],
        [5, 200, 1000, 2],
        [1000, 200, 1000, 201],
        [0.5, 2000, 1000, 2],
        [60_000, 200, 1000, 1000],
        [999, 1, 5, 1],
        [1000, 1, 5, 2],
    ])("at %f ms, %i/s, %i in all: %i due", (elapsed, rate, total, due) => {
        expect(arrivalsDue(elapsed, rate, total)).toBe(due);
    });

    it.each([200, 500, 3])("is due exactly at its own scheduled time and not before (%i/s)", (rate) => {
        for (let i = 0; i < 50; i++) {
            expect(arrivalsDue(scheduledAt(i, rate), rate, 1000)).toBeGreaterThanOrEqual(i + 1);
            expect(arrivalsDue(scheduledAt(i, rate) - 1e-6, rate, 1000)).toBe(i);
        }
    });
});

describe("runFixedRate", () => {
    it("sends rate x seconds requests, times each that succeeds and counts each that fails", async () => {
        let sent = 0;
        const run = await runFixedRate(20_000, 0.01, async () => {
            if (++sent % 4 === 0) throw new Error(`refused ${sent}`);
        });
        expect(sent).toBe(200);
        expect(run.latencies).toHaveLength(150);
        expect(run.errors).toBe(50);
        expect(run.firstError).toBe("refused 4");
        expect(run.latencies.every((ms) => ms >= 0)).toBe(true);
    });
});
