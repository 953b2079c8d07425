// Open-loop load at a fixed arrival rate: request i is due at i / rate seconds after the start, whether or not the
// ones before it have answered, and its latency runs from that scheduled time, not from when it was actually sent.
// A stalled proxy (or a stalled driver) therefore shows in the latency instead of quietly lowering the load
// (coordinated omission, which closed-loop generators such as wrk suffer).

/** How many of `total` requests at `ratePerSecond` are due `elapsedMs` after the start. */
export function arrivalsDue(elapsedMs: number, ratePerSecond: number, total: number): number {
    if (elapsedMs < 0) return 0;
    return Math.min(total, Math.floor((elapsedMs * ratePerSecond) / 1000) + 1);
}

/** When request `index` is due, in ms after the start. */
export const scheduledAt = (index: number, ratePerSecond: number) => (index * 1000) / ratePerSecond;

export interface FixedRateRun {
    /** Each request's latency from its scheduled send time to the end of its answer, ms, in order of completion. */
    latencies: number[];
    errors: number;
    /** The first error's message, if any. */
    firstError?: string;
}

/**
 * Sends `ratePerSecond * seconds` requests on schedule; `send` resolves when the whole answer has been read (and
 * rejects on anything but success). Resolves when every request has finished.
 */
export async function runFixedRate(ratePerSecond: number, seconds: number, send: () => Promise<void>): Promise<FixedRateRun> {
    const total = Math.round(ratePerSecond * seconds);
    const run: FixedRateRun = { latencies: [], errors: 0 };
    const pending: Promise<void>[] = [];
    const start = performance.now();
    let sent = 0;
    await new Promise<void>((resolve) => {
        const tick = () => {
            const due = arrivalsDue(performance.now() - start, ratePerSecond, total);
            for (; sent < due; sent++) {
                const scheduled = start + scheduledAt(sent, ratePerSecond);
                pending.push(
                    send().then(
                        () => void run.latencies.push(performance.now() - scheduled),
                        (error: Error) => {
                            run.errors++;
                            run.firstError ??= error.message;
                        },
                    ),
                );
            }
            if (sent === total) return resolve();
            setTimeout(tick, Math.max(0, start + scheduledAt(sent, ratePerSecond) - performance.now()));
        };
        tick();
    });
    await Promise.all(pending);
    return run;
}
