// The audit trail: one append-only JSON Lines file per service on its volume, every line hash-chained to the one
// before, written in groups that share one fdatasync (the ledger's group commit, docs/ledger.md). Only events a
// service declares, with only the fields it declares, can be written: nothing else (a token, a message) gets in.
import { createHash } from "node:crypto";
import { closeSync, fdatasync, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, write, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import type { Counter } from "prom-client";
import { z } from "zod";
import type { Logger } from "./log";
import type { AuditBudget } from "./rateLimiter";

/** Where a service's stream lives in its audit directory. */
export const auditFileName = (service: string) => `${service}.audit.jsonl`;
export const AUDIT_FILE = /^([a-z][a-z0-9-]*)\.audit\.jsonl$/;

/** The `prev` of a stream's first line. */
export const GENESIS = "0".repeat(64);

/**
 * Field values an audit line may carry. Each is a short identifier or a number: no free text, so nothing a client
 * sent (a token, a prompt) can be copied into the trail by mistake.
 */
export const auditField = {
    /** An agent or user name, a rule id, a reason code. */
    name: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/),
    /** A truncated sha256 (16 hex digits) of something too sensitive to write, so two lines can be compared. */
    digest: z.string().regex(/^[0-9a-f]{16}$/),
    /** A reason code, with up to three qualifiers after colons (`resolved_6to4:non_public:cloudMetadata`). */
    reason: z.string().regex(/^[a-z0-9][a-zA-Z0-9_]{0,63}(:[a-zA-Z0-9_]{1,63}){0,3}$/),
    address: z.string().regex(/^[0-9a-f.:]{2,45}$/),
    /** A destination's host name or IP literal, lowercase: never a URL (no path, no query, no credentials). */
    host: z.string().regex(/^[a-z0-9_][a-z0-9_.:-]{0,252}$/),
    port: z.number().int().min(0).max(65535),
    count: z.number().int().min(0),
};

/** A client's address as the audit trail takes it; "::" for one it could not hold (an IPv6 zone, none at all). */
export function auditAddress(address: string | undefined): string {
    const lowered = (address ?? "").toLowerCase();
    return auditField.address.safeParse(lowered).success ? lowered : "::";
}

/** A name (a user's, a skill's) as the trail takes it: `<field>` when it is an identifier, else only its digest `<field>Sha256`. */
export function auditName<F extends string>(field: F, value: string): Partial<Record<F | `${F}Sha256`, string>> {
    return (auditField.name.safeParse(value).success ? { [field]: value } : { [`${field}Sha256`]: shortDigest(value) }) as Partial<Record<F | `${F}Sha256`, string>>;
}

/**
 * A host name someone asked for, as the trail takes it: `host` when it is a plain name or address, else only its
 * digest `hostSha256` (a name of odd bytes is kept out of the trail, but two such lines can still be matched).
 */
export function auditHost(host: string): { host: string } | { hostSha256: string } {
    const lowered = host.toLowerCase();
    return auditField.host.safeParse(lowered).success ? { host: lowered } : { hostSha256: shortDigest(host) };
}

/** A service's events: each type with the exact fields it may carry (strict: any other field is refused). */
export type AuditEvents = Record<string, z.ZodObject>;
export type AuditEventOf<E extends AuditEvents> = { [K in keyof E & string]: { type: K } & z.input<E[K]> }[keyof E & string];

/** A digest for an audit line: the first 16 hex digits of sha256. */
export function shortDigest(text: string): string {
    return createHash("sha256").update(text, "utf8").digest("hex").slice(0, 16);
}

const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");
const HASH_SUFFIX = /,"hash":"([0-9a-f]{64})"\}$/;

/**
 * One line: the body's JSON with `hash` last, where hash = sha256 of the body's JSON text (which carries `prev`,
 * the line before's hash). Verification slices the text, never re-serialises it.
 */
export function encodeAuditLine(body: { seq: number; ts: string; service: string; type: string; prev: string } & Record<string, unknown>): { line: string; hash: string } {
    const json = JSON.stringify(body);
    const hash = sha256(json);
    return { line: `${json.slice(0, -1)},"hash":"${hash}"}`, hash };
}

export interface AuditLine {
    seq: number;
    ts: string;
    service: string;
    type: string;
    prev: string;
    hash: string;
    [field: string]: unknown;
}

export type ChainVerdict =
    | { ok: true; lines: number; last: { seq: number; hash: string } | undefined }
    | { ok: false; lines: number; line: number; problem: string };

/**
 * Checks one stream's text (pure). Reports the first line that is not what the chain says it must be: its own hash
 * (an edit), its seq (a deletion, insertion or reorder), its prev (a line replaced together with its hash). A last
 * line without its newline is a torn write (a crash mid-append), reported as such.
 */
export function verifyChain(text: string): ChainVerdict {
    if (text === "") return { ok: true, lines: 0, last: undefined };
    const lines = text.split("\n");
    const torn = !text.endsWith("\n");
    if (!torn) lines.pop();
    let prev = GENESIS;
    let service: string | undefined;
    for (const [index, line] of lines.entries()) {
        const number = index + 1;
        const fail = (problem: string): ChainVerdict => ({ ok: false, lines: lines.length, line: number, problem });
        if (torn && number === lines.length) return fail("incomplete last line (a write cut short by a crash); the service moves it aside when it starts");
        const suffix = HASH_SUFFIX.exec(line);
        if (!suffix) return fail("not an audit line (no trailing hash)");
        const bodyText = `${line.slice(0, suffix.index)}}`;
        if (sha256(bodyText) !== suffix[1]) return fail("its hash does not match its content: the line was changed");
        let body: Record<string, unknown>;
        try {
            body = JSON.parse(bodyText) as Record<string, unknown>;
        } catch {
            return fail("not JSON");
        }
        if (body.seq !== number) return fail(`seq ${String(body.seq)} where ${number} was due: a line was deleted, inserted or moved`);
        if (body.prev !== prev) return fail(`prev does not match line ${number - 1}'s hash: this line or the one before was replaced`);
        if (typeof body.service !== "string" || (service !== undefined && body.service !== service)) return fail("service differs from the stream's");
        service = body.service;
        prev = suffix[1];
    }
    return { ok: true, lines: lines.length, last: lines.length > 0 ? { seq: lines.length, hash: prev } : undefined };
}

export interface DirectoryVerdict {
    file: string;
    verdict: ChainVerdict;
}

/** Verifies every stream (`*.audit.jsonl`) in a directory. */
export function verifyDirectory(dir: string): DirectoryVerdict[] {
    return readdirSync(dir)
        .filter((name) => AUDIT_FILE.test(name))
        .sort()
        .map((name) => ({ file: path.join(dir, name), verdict: verifyChain(readFileSync(path.join(dir, name), "utf8")) }));
}

/** Parses a stream's complete lines (for reading, after or without verification). */
export function readAuditLines(text: string): AuditLine[] {
    return text
        .split("\n")
        .filter((line) => HASH_SUFFIX.test(line))
        .map((line) => JSON.parse(line) as AuditLine);
}

/** The file calls of the append path, in one object so tests can make them fail. */
export const auditIo = {
    write: promisify(write) as (fd: number, buffer: Buffer, offset: number, length: number) => Promise<{ bytesWritten: number }>,
    fdatasync: promisify(fdatasync),
};

/** How long an event may wait for others to share its fdatasync. */
export const AUDIT_GROUP_MS = 20;
/** The most bytes of a stream's end read at start to find where the chain stands. */
const TAIL_READ_BYTES = 64 * 1024;

export interface AuditLogOptions<E extends AuditEvents> {
    dir: string;
    service: string;
    events: E;
    /** Told when a crash left a torn last line (moved aside to `.torn-<time>`) and when a write fails. */
    onProblem(problem: { kind: "torn_tail"; bytes: number; savedAs: string } | { kind: "write_failed"; error: string; lost: number }): void;
    now?: () => Date;
}

const RESERVED_FIELDS = new Set(["seq", "ts", "service", "type", "prev", "hash"]);

/** Where the chain stands at the end of a file: its last complete line. */
function chainEnd(fd: number, size: number): { seq: number; hash: string; complete: number } {
    const start = Math.max(0, size - TAIL_READ_BYTES);
    const buffer = Buffer.alloc(size - start);
    readSync(fd, buffer, 0, buffer.length, start);
    const text = buffer.toString("utf8");
    const complete = start + Buffer.byteLength(text.slice(0, text.lastIndexOf("\n") + 1));
    const lines = text.slice(0, text.lastIndexOf("\n")).split("\n");
    const last = lines[lines.length - 1];
    if (complete === 0 || !last) return { seq: 0, hash: GENESIS, complete };
    const suffix = HASH_SUFFIX.exec(last);
    const seq = suffix ? /^\{"seq":(\d+),/.exec(last)?.[1] : undefined;
    if (!suffix || seq === undefined) throw new Error("the audit stream's last line is not an audit line: check it with npm run audit -- verify, and move the file aside");
    return { seq: Number(seq), hash: suffix[1], complete };
}

/**
 * A service's audit stream. `record` validates the event against the service's declared events (throwing on an
 * undeclared type or field: a programming error, never a runtime choice) and queues it; the chain (seq, prev) is
 * assigned when the group is written, so a failed write leaves no gap.
 */
export class AuditLog<E extends AuditEvents> {
    private fd: number;
    private seq: number;
    private prev: string;
    private committedBytes: number;
    private queue: { ts: string; event: Record<string, unknown>; done: () => void }[] = [];
    private timer: NodeJS.Timeout | undefined;
    private flushing: Promise<void> | undefined;
    private closed = false;
    /** Whether the last write failed (the service reports itself unhealthy then). */
    failing = false;
    readonly file: string;

    /** Each declared event's schema, strict (any other field refused), built once. */
    private readonly schemas: Map<string, z.ZodObject>;

    constructor(private readonly options: AuditLogOptions<E>) {
        this.schemas = new Map(Object.entries(options.events).map(([type, schema]) => [type, schema.strict()]));
        for (const [type, schema] of Object.entries(options.events)) {
            const clash = Object.keys(schema.shape).find((field) => RESERVED_FIELDS.has(field));
            if (clash) throw new Error(`audit: event '${type}' declares the reserved field '${clash}'`);
        }
        mkdirSync(options.dir, { recursive: true, mode: 0o700 });
        this.file = path.join(options.dir, auditFileName(options.service));
        this.fd = openSync(this.file, "a+", 0o600);
        const size = fstatSync(this.fd).size;
        const end = chainEnd(this.fd, size);
        if (end.complete < size) {
            const savedAs = `${this.file}.torn-${Date.now()}`;
            const torn = Buffer.alloc(size - end.complete);
            readSync(this.fd, torn, 0, torn.length, end.complete);
            writeFileSync(savedAs, torn, { mode: 0o600 });
            ftruncateSync(this.fd, end.complete);
            options.onProblem({ kind: "torn_tail", bytes: torn.length, savedAs });
        }
        this.seq = end.seq;
        this.prev = end.hash;
        this.committedBytes = end.complete;
    }

    /** Queues an event; the promise resolves once it is on disk (callers need not wait). */
    record(event: AuditEventOf<E>): Promise<void> {
        const schema = this.schemas.get(event.type);
        if (!schema) throw new Error(`audit: undeclared event type '${event.type}'`);
        const { type, ...fields } = event as { type: string } & Record<string, unknown>;
        const parsed = schema.parse(fields) as Record<string, unknown>;
        // Its descriptor may already belong to another file: an event that comes too late is reported, not written.
        if (this.closed) {
            this.options.onProblem({ kind: "write_failed", error: "the audit stream is closed", lost: 1 });
            return Promise.resolve();
        }
        const ts = (this.options.now?.() ?? new Date()).toISOString();
        return new Promise((resolve) => {
            this.queue.push({ ts, event: { type, ...parsed }, done: resolve });
            this.timer ??= setTimeout(() => void this.flush(), AUDIT_GROUP_MS);
        });
    }

    private flush(): Promise<void> {
        clearTimeout(this.timer);
        this.timer = undefined;
        this.flushing ??= this.writeQueued().finally(() => {
            this.flushing = undefined;
            if (this.queue.length > 0) this.timer ??= setTimeout(() => void this.flush(), AUDIT_GROUP_MS);
        });
        return this.flushing;
    }

    private async writeQueued() {
        const batch = this.queue;
        this.queue = [];
        let { seq, prev } = this;
        const lines: string[] = [];
        for (const item of batch) {
            seq += 1;
            const { type, ...fields } = item.event;
            const encoded = encodeAuditLine({ seq, ts: item.ts, service: this.options.service, type: type as string, ...fields, prev });
            lines.push(`${encoded.line}\n`);
            prev = encoded.hash;
        }
        const bytes = Buffer.from(lines.join(""));
        try {
            for (let written = 0; written < bytes.length; ) written += (await auditIo.write(this.fd, bytes, written, bytes.length - written)).bytesWritten;
            await auditIo.fdatasync(this.fd);
            this.committedBytes += bytes.length;
            this.seq = seq;
            this.prev = prev;
            this.failing = false;
        } catch (error) {
            // Cut a partial write back, so the chain on disk stays whole; the next group continues from it.
            try {
                ftruncateSync(this.fd, this.committedBytes);
            } catch {
                // the next write fails again and says so
            }
            this.failing = true;
            this.options.onProblem({ kind: "write_failed", error: (error as Error).message.slice(0, 200), lost: batch.length });
        }
        for (const item of batch) item.done();
    }

    /** Writes what is queued, then closes the file (once; later calls do nothing). */
    async close(): Promise<void> {
        while (this.flushing || this.queue.length > 0) await this.flush();
        if (this.closed) return;
        this.closed = true;
        closeSync(this.fd);
    }
}

/** The counters a service keeps of its audit stream: events given to it and left out (by type), writes lost. */
export interface AuditCounters {
    auditEvents: Counter<"type">;
    auditUnaudited: Counter<"type">;
    auditFailures: Counter;
}

/**
 * Records an event within the audit budget of its kind and `key` (an agent, or an address for an unknown source),
 * never awaited. `event` gets how many of its kind from that key were left out since the last one written. An event
 * its declaration refuses is a bug: counted and logged, and the refusal it describes still happens.
 */
export function recordWithinBudget<E extends AuditEvents>(
    stream: AuditLog<E>,
    budget: AuditBudget,
    counters: AuditCounters,
    log: Logger,
    type: keyof E & string,
    key: string,
    event: (unaudited: number) => AuditEventOf<E>,
): void {
    const unaudited = budget.admit(`${type}/${key}`);
    if (unaudited === undefined) return void counters.auditUnaudited.inc({ type });
    try {
        void stream.record(event(unaudited));
        counters.auditEvents.inc({ type });
    } catch (error) {
        counters.auditFailures.inc();
        log("audit_refused", { type, error: (error as Error).message.slice(0, 300) });
    }
}
