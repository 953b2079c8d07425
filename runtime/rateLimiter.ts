// Token buckets per key, and the audit budget built on them: how the services bound what a flood can make them do
// or write.

/**
 * A token bucket per key (a user, a client address): `ratePerSecond` refills, up to `burst`. Past `maxKeys` keys
 * (addresses an attacker can vary) every bucket starts full again, so memory stays bounded.
 */
export class RateLimiter {
    private readonly buckets = new Map<string, { tokens: number; at: number }>();

    constructor(
        private readonly ratePerSecond: number,
        private readonly burst: number,
        private readonly now: () => number = () => performance.now(),
        private readonly maxKeys = 100_000,
    ) {}

    take(key: string): boolean {
        const now = this.now();
        if (this.buckets.size >= this.maxKeys && !this.buckets.has(key)) this.buckets.clear();
        const bucket = this.buckets.get(key) ?? { tokens: this.burst, at: now };
        bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.ratePerSecond);
        bucket.at = now;
        this.buckets.set(key, bucket);
        if (bucket.tokens < 1) return false;
        bucket.tokens -= 1;
        return true;
    }

    forget(key: string) {
        this.buckets.delete(key);
    }
}

/**
 * How many events of one kind a key (a client address, an agent) may write to the audit trail: a bucket of
 * `ratePerSecond` and `burst`. Past it an event is left out but counted, and the next one written carries that
 * count (`unaudited`), so a flood cannot fill the volume and the trail still says how much it left out.
 */
export class AuditBudget {
    private readonly limiter: RateLimiter;
    private readonly unaudited = new Map<string, number>();

    constructor(
        ratePerSecond: number,
        burst: number,
        now: () => number = () => performance.now(),
        private readonly maxKeys = 100_000,
    ) {
        this.limiter = new RateLimiter(ratePerSecond, burst, now, maxKeys);
    }

    /** Write this event with `unaudited` set to the number returned (events of this key left out before it), or undefined: leave it out. */
    admit(key: string): number | undefined {
        if (!this.limiter.take(key)) {
            if (this.unaudited.size >= this.maxKeys && !this.unaudited.has(key)) this.unaudited.clear();
            this.unaudited.set(key, (this.unaudited.get(key) ?? 0) + 1);
            return undefined;
        }
        const left = this.unaudited.get(key) ?? 0;
        this.unaudited.delete(key);
        return left;
    }
}
