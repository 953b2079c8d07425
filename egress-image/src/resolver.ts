// The gateway's DNS client: c-ares (`dns.promises.Resolver`) rather than `dns.lookup`. getaddrinfo runs on
// libuv's four worker threads and cannot be cancelled, so a few lookups that really hang would hold every thread
// and stall all agents' lookups after their clients had their 504. c-ares queries are sockets on the event loop,
// bounded by their own timeout and cancellable. c-ares reads /etc/resolv.conf, not /etc/hosts or nsswitch: in the
// container that is Docker's embedded DNS (127.0.0.11), which answers network aliases and container names itself.
import { Resolver } from "node:dns/promises";

export interface ResolverOptions {
    /** The lookup's bound: c-ares gives up by itself within about this long, and the caller aborts at it. */
    timeoutMs: number;
    /** `ip` or `ip:port`; empty: the servers /etc/resolv.conf names. */
    servers: readonly string[];
}

/** Answers that mean "no addresses of this family", not a failure. */
const NO_DATA = new Set(["ENODATA", "ENOTFOUND"]);
/** Channels kept for reuse. An idle channel holds no socket: c-ares closes them when no query is pending. */
const MAX_IDLE_CHANNELS = 32;

/**
 * Every A and AAAA answer for a name (both asked at once), for the caller to vet. Each lookup has a channel of its
 * own, so aborting `signal` cancels exactly its queries (`resolver.cancel()` cancels the whole channel).
 * One family failing while the other answers yields the other's answers; only answers are ever dialled.
 */
export function dnsResolver({ timeoutMs, servers }: ResolverOptions): (host: string, signal: AbortSignal) => Promise<string[]> {
    const idle: Resolver[] = [];
    const channel = () => {
        // Two tries of t then 2t (c-ares backs off), and Node notices an expiry up to t late: about 4t, a fifth to spare.
        const resolver = new Resolver({ timeout: Math.max(1, Math.floor(timeoutMs / 5)), tries: 2 });
        if (servers.length > 0) resolver.setServers([...servers]);
        return resolver;
    };
    return async (host, signal) => {
        signal.throwIfAborted();
        const resolver = idle.pop() ?? channel();
        const cancel = () => resolver.cancel();
        signal.addEventListener("abort", cancel, { once: true });
        try {
            const families = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
            const answers = families.flatMap((family) => (family.status === "fulfilled" ? family.value : []));
            if (answers.length > 0) return answers;
            const failures = families.flatMap((family) => (family.status === "rejected" ? [family.reason] : []));
            if (failures.length > 0) throw failures.find((error) => !NO_DATA.has(error?.code)) ?? failures[0];
            return [];
        } finally {
            signal.removeEventListener("abort", cancel);
            if (idle.length < MAX_IDLE_CHANNELS) idle.push(resolver);
        }
    };
}
