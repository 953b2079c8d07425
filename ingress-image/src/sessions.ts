// Browser sign-ins: a person posts their token once to /signin and gets a session cookie, since a browser cannot
// put a bearer header on the Control UI's page loads and WebSocket. Sessions live in the Ingress's memory only (a
// restart signs everyone out); only the sha256 of each session id is kept, so the map holds nothing a cookie can be
// rebuilt from.
import { createHash, randomBytes } from "node:crypto";
import { SESSION_COOKIE } from "../../contracts/ingress";

interface Session {
    user: string;
    expiresAt: number;
}

const digest = (id: string) => createHash("sha256").update(id, "utf8").digest("base64url");

export class SessionStore {
    private readonly sessions = new Map<string, Session>();

    constructor(
        private readonly ttlMs: number,
        private readonly maxPerUser: number,
        /** Milliseconds (tests drive it). */
        private readonly now: () => number = Date.now,
    ) {}

    /** A new session for the user: the cookie's value (256 random bits). The user's oldest beyond the cap is dropped. */
    create(user: string): string {
        this.sweep();
        const mine = [...this.sessions].filter(([, s]) => s.user === user).sort(([, a], [, b]) => a.expiresAt - b.expiresAt);
        for (const [key] of mine.slice(0, Math.max(0, mine.length - this.maxPerUser + 1))) this.sessions.delete(key);
        const id = randomBytes(32).toString("base64url");
        this.sessions.set(digest(id), { user, expiresAt: this.now() + this.ttlMs });
        return id;
    }

    /** The user a live session belongs to; an expired one is forgotten. */
    userOf(id: string | undefined): string | undefined {
        if (id === undefined) return undefined;
        const key = digest(id);
        const session = this.sessions.get(key);
        if (!session) return undefined;
        if (session.expiresAt <= this.now()) {
            this.sessions.delete(key);
            return undefined;
        }
        return session.user;
    }

    remove(id: string | undefined): void {
        if (id !== undefined) this.sessions.delete(digest(id));
    }

    /** Ends every session of the user (removed, token rotated, agents changed): how many there were. */
    revokeUser(user: string): number {
        let ended = 0;
        for (const [key, session] of this.sessions) {
            if (session.user !== user) continue;
            this.sessions.delete(key);
            ended++;
        }
        return ended;
    }

    get size(): number {
        return this.sessions.size;
    }

    private sweep() {
        const now = this.now();
        for (const [key, session] of this.sessions) if (session.expiresAt <= now) this.sessions.delete(key);
    }
}

const COOKIE_VALUE = /^[A-Za-z0-9_-]{43}$/;

/** The session id in a Cookie header, if it holds one well-formed session cookie. */
export function sessionFromCookies(header: string | undefined): string | undefined {
    if (!header) return undefined;
    const values = header
        .split(";")
        .map((pair) => pair.trim())
        .filter((pair) => pair.startsWith(`${SESSION_COOKIE}=`))
        .map((pair) => pair.slice(SESSION_COOKIE.length + 1));
    return values.length === 1 && COOKIE_VALUE.test(values[0]) ? values[0] : undefined;
}

/** The Cookie header the agent's gateway gets: every cookie but the Ingress's own session (undefined if none is left). */
export function cookiesForGateway(header: string | undefined): string | undefined {
    if (!header) return undefined;
    const kept = header
        .split(";")
        .map((pair) => pair.trim())
        .filter((pair) => pair !== "" && !pair.startsWith(`${SESSION_COOKIE}=`));
    return kept.length > 0 ? kept.join("; ") : undefined;
}

/** Set-Cookie for a session: Secure, HttpOnly, SameSite=Strict, host-only, for every path. */
export function sessionCookie(id: string, maxAgeSeconds: number): string {
    return `${SESSION_COOKIE}=${id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}`;
}

export const CLEARED_SESSION_COOKIE = `${SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0`;
