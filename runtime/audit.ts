// The audit trail: one append-only JSON Lines stream per service on its volume, every line hash-chained to the one
// before, written in groups that share one fdatasync (the ledger's group commit, docs/ledger.md). The stream is a live
// file and the segments rotated out of it, the chain running on across them. Only events a service declares, with
// only the fields it declares, can be written: nothing else (a token, a message) gets in.
import { createHash } from "node:crypto";
import { closeSync, existsSync, fdatasync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, write, writeFileSync } from "node:fs";
import { open, readdir, rename, unlink } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import type { Counter } from "prom-client";
import { z } from "zod";
import type { Logger } from "./log";
import type { AuditBudget } from "./rateLimiter";

/** Where a service's live file is in its audit directory. */
export const auditFileName = (service: string) => `${service}.audit.jsonl`;
/** A segment rotated out of the live file, named by the seq of its first line (padded, so names sort in chain order). */
export const auditSegmentName = (service: string, firstSeq: number) => `${service}.audit.${String(firstSeq).padStart(12, "0")}.jsonl`;
const STREAM_FILE = /^([a-z][a-z0-9-]*)\.audit\.(?:(\d{12,})\.)?jsonl$/;

/** The `prev` of a stream's first line. */
export const GENESIS = "0".repeat(64);

/** When the live file is rotated into a segment, and how many segments are kept (each service's runtime config). */
export const auditRotationSchema = z.strictObject({
    /** A group that would take the live file past this size is written to a new live file, the old one becoming a segment. */
    maxFileBytes: z.number().int().min(1024).default(64 * 1024 * 1024),
    /** Segments kept besides the live file; the oldest beyond this are deleted after a rotation. */
    keepSegments: z.number().int().min(1).default(10),
});
export type AuditRotation = z.output<typeof auditRotationSchema>;

/** One file of a stream: a segment (`firstSeq` from its name) or the live file (`firstSeq` undefined). */
export interface StreamFile {
    file: string;
    firstSeq: number | undefined;
}

/** Each service's files in a directory, in chain order: its segments by the seq they start at, then its live file. */
export function auditStreams(dir: string, names: readonly string[] = readdirSync(dir)): Map<string, StreamFile[]> {
    const streams = new Map<string, StreamFile[]>();
    for (const name of names) {
        const match = STREAM_FILE.exec(name);
        if (!match) continue;
        const files = streams.get(match[1]) ?? [];
        files.push({ file: path.join(dir, name), firstSeq: match[2] === undefined ? undefined : Number(match[2]) });
        streams.set(match[1], files);
    }
    const order = (f: StreamFile) => f.firstSeq ?? Number.POSITIVE_INFINITY;
    for (const files of streams.values()) files.sort((a, b) => order(a) - order(b));
    return new Map([...streams].sort(([a], [b]) => a.localeCompare(b)));
}

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

/** Where a chain stands: a line's seq and hash (before a stream's first line: seq 0 and GENESIS). */
export interface ChainPoint {
    seq: number;
    hash: string;
}
export const CHAIN_START: ChainPoint = { seq: 0, hash: GENESIS };

/**
 * Where the chain stands before a file's first line: the end of the file before it. A file checked on its own (the
 * oldest segment kept, whose predecessors were deleted, or one after a broken file) has no hash to continue from,
 * and a segment has its seq from its name.
 */
export type ChainStart = ChainPoint | { seq: number | undefined; hash: undefined };

export type ChainVerdict =
    | { ok: true; lines: number; last: ChainPoint | undefined; resumedFrom?: ChainPoint }
    | { ok: false; lines: number; line: number; problem: string };

const CHAIN_HASH = /^[0-9a-f]{64}$/;

/**
 * Checks one file of a stream (pure), from where the chain stands before it. Reports the first line that is not what
 * the chain says it must be: its own hash (an edit), its seq (a deletion, insertion or reorder), its prev (a line
 * replaced together with its hash). A last line without its newline is a torn write (a crash mid-append), reported as
 * such. A file starting with no known hash before it that continues from one is `resumedFrom` that point.
 */
export function verifyChain(text: string, start: ChainStart = CHAIN_START): ChainVerdict {
    if (text === "") return { ok: true, lines: 0, last: undefined };
    const lines = text.split("\n");
    const torn = !text.endsWith("\n");
    if (!torn) lines.pop();
    let { seq, hash: prev } = start as { seq: number | undefined; hash: string | undefined };
    let resumedFrom: ChainPoint | undefined;
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
        if (seq === undefined) {
            if (typeof body.seq !== "number" || !Number.isSafeInteger(body.seq) || body.seq < 1) return fail(`seq ${String(body.seq)} is not a line number`);
            seq = body.seq - 1;
        }
        if (body.seq !== seq + 1) {
            if (number === 1 && prev === undefined) return fail(`seq ${String(body.seq)} where its name says ${seq + 1}: lines were cut from its start, or it was renamed`);
            if (number === 1 && seq > 0) return fail(`seq ${String(body.seq)} where ${seq + 1} was due after the file before it: lines or a whole segment are missing, or the segments are out of order`);
            return fail(`seq ${String(body.seq)} where ${seq + 1} was due: a line was deleted, inserted or moved`);
        }
        if (prev === undefined) {
            if (seq > 0 && (typeof body.prev !== "string" || !CHAIN_HASH.test(body.prev))) return fail("prev is not a hash");
            prev = seq === 0 ? GENESIS : (body.prev as string);
            if (seq > 0) resumedFrom = { seq, hash: prev };
        }
        if (body.prev !== prev) {
            if (number > 1 || seq === 0) return fail(`prev does not match ${number > 1 ? `line ${number - 1}'s hash` : "the start of the chain"}: this line or the one before was replaced`);
            return fail("prev does not match the last line of the file before it: a segment was replaced, or the segments are out of order");
        }
        if (typeof body.service !== "string" || (service !== undefined && body.service !== service)) return fail("service differs from the stream's");
        service = body.service;
        seq += 1;
        prev = suffix[1];
    }
    return { ok: true, lines: lines.length, last: { seq: seq!, hash: prev! }, ...(resumedFrom && { resumedFrom }) };
}

export interface DirectoryVerdict {
    service: string;
    file: string;
    verdict: ChainVerdict;
}

/**
 * Verifies every stream in a directory, each file in chain order from where the file before it ends. The oldest
 * segment kept may start mid-chain (`resumedFrom`: the segments before it were deleted); a live file with no segment
 * before it must start the chain. After a broken file, the next is checked on its own.
 */
export function verifyDirectory(dir: string): DirectoryVerdict[] {
    return [...auditStreams(dir)].flatMap(([service, files]) => {
        let end: ChainPoint | undefined;
        return files.map(({ file, firstSeq }, index) => {
            const start: ChainStart = end ?? (firstSeq !== undefined ? { seq: firstSeq - 1, hash: undefined } : index === 0 ? CHAIN_START : { seq: undefined, hash: undefined });
            let verdict = verifyChain(readFileSync(file, "utf8"), start);
            if (verdict.ok && verdict.last && firstSeq !== undefined && verdict.last.seq - verdict.lines + 1 !== firstSeq) {
                verdict = { ok: false, lines: verdict.lines, line: 1, problem: `its name says it starts at seq ${firstSeq}, its first line is seq ${verdict.last.seq - verdict.lines + 1}: it was renamed` };
            }
            end = verdict.ok ? (verdict.last ?? end) : undefined;
            return { service, file, verdict };
        });
    });
}

/** Parses a stream's complete lines (for reading, after or without verification). */
export function readAuditLines(text: string): AuditLine[] {
    return text
        .split("\n")
        .filter((line) => HASH_SUFFIX.test(line))
        .map((line) => JSON.parse(line) as AuditLine);
}

/** The file calls of the append path and of rotation, in one object so tests can make them fail. */
export const auditIo = {
    write: promisify(write) as (fd: number, buffer: Buffer, offset: number, length: number) => Promise<{ bytesWritten: number }>,
    fdatasync: promisify(fdatasync),
    rename,
    /** Makes a directory's entries durable: a rename, a file just created. */
    async syncDirectory(dir: string): Promise<void> {
        const handle = await open(dir, "r");
        try {
            await handle.sync();
        } finally {
            await handle.close();
        }
    },
};

function syncDirectorySync(dir: string) {
    const fd = openSync(dir, "r");
    try {
        fsyncSync(fd);
    } finally {
        closeSync(fd);
    }
}

/** How long an event may wait for others to share its fdatasync. */
export const AUDIT_GROUP_MS = 20;
/** The most bytes of a stream's end read at start to find where the chain stands. */
const TAIL_READ_BYTES = 64 * 1024;

export type AuditProblem =
    | { kind: "torn_tail"; bytes: number; savedAs: string }
    | { kind: "write_failed"; error: string; lost: number }
    | { kind: "rotate_failed"; error: string }
    | { kind: "prune_failed"; error: string };

export interface AuditLogOptions<E extends AuditEvents> {
    dir: string;
    service: string;
    events: E;
    /** The defaults of auditRotationSchema when not given. */
    rotation?: AuditRotation;
    /**
     * Told when a crash left a torn last line (moved aside to `.torn-<time>`), when a write fails, and when a rotation
     * or the deletion of old segments fails (the group is then written to the live file anyway, and the next one tries again).
     */
    onProblem(problem: AuditProblem): void;
    now?: () => Date;
}

const RESERVED_FIELDS = new Set(["seq", "ts", "service", "type", "prev", "hash"]);
const LINE_SEQ = /^\{"seq":(\d+),/;

/** Where the chain stands at the end of a file: its last complete line (CHAIN_START for none), and that line's end. */
function chainEnd(fd: number, size: number): ChainPoint & { complete: number } {
    const start = Math.max(0, size - TAIL_READ_BYTES);
    const buffer = Buffer.alloc(size - start);
    readSync(fd, buffer, 0, buffer.length, start);
    const text = buffer.toString("utf8");
    const complete = start + Buffer.byteLength(text.slice(0, text.lastIndexOf("\n") + 1));
    const lines = text.slice(0, text.lastIndexOf("\n")).split("\n");
    const last = lines[lines.length - 1];
    if (complete === 0 || !last) return { ...CHAIN_START, complete };
    const suffix = HASH_SUFFIX.exec(last);
    const seq = suffix ? LINE_SEQ.exec(last)?.[1] : undefined;
    if (!suffix || seq === undefined) throw new Error("the audit stream's last line is not an audit line: check it with npm run audit -- verify, and move the file aside");
    return { seq: Number(seq), hash: suffix[1], complete };
}

/** The seq of a file's first line (which names the segment it becomes). */
function firstSeqOf(fd: number): number {
    const buffer = Buffer.alloc(64);
    const read = readSync(fd, buffer, 0, buffer.length, 0);
    const seq = LINE_SEQ.exec(buffer.toString("latin1", 0, read))?.[1];
    if (seq === undefined) throw new Error("the audit stream's first line is not an audit line: check it with npm run audit -- verify, and move the file aside");
    return Number(seq);
}

/** A service's segments in chain order (its files without the live one). */
const segmentsOf = (dir: string, service: string, names?: readonly string[]) => (auditStreams(dir, names).get(service) ?? []).filter((f) => f.firstSeq !== undefined);

/**
 * Where the chain stands at the end of the newest segment, for a live file that is empty: a rotation (or a crash
 * during one) left it so, or the stream is new (CHAIN_START, with no segment).
 */
function segmentsEnd(dir: string, service: string): ChainPoint {
    const newest = segmentsOf(dir, service).at(-1);
    if (!newest) return CHAIN_START;
    const fd = openSync(newest.file, "r");
    try {
        const size = fstatSync(fd).size;
        const { complete, ...end } = chainEnd(fd, size);
        if (complete === 0 || complete < size) throw new Error(`the audit segment ${newest.file} is empty or ends in an incomplete line, which no rotation leaves: check it with npm run audit -- verify, and move it aside`);
        return end;
    } finally {
        closeSync(fd);
    }
}

/**
 * A service's audit stream. `record` validates the event against the service's declared events (throwing on an
 * undeclared type or field: a programming error, never a runtime choice) and queues it; the chain (seq, prev) is
 * assigned when the group is written, so a failed write leaves no gap. A group that would take the live file past
 * `rotation.maxFileBytes` first rotates it into a segment; the new live file's first line continues the chain.
 */
export class AuditLog<E extends AuditEvents> {
    private fd: number;
    private seq: number;
    private prev: string;
    private committedBytes: number;
    /** The seq of the live file's first line: the name of the segment it becomes. */
    private firstSeq: number;
    /** A rotation renamed the live file but failed before a new one was open: `fd` is on the segment. */
    private renamed = false;
    private queue: { ts: string; event: Record<string, unknown>; done: () => void }[] = [];
    private timer: NodeJS.Timeout | undefined;
    private flushing: Promise<void> | undefined;
    private closed = false;
    /** Whether the last write failed (the service reports itself unhealthy then). */
    failing = false;
    readonly file: string;
    private readonly rotation: AuditRotation;

    /** Each declared event's schema, strict (any other field refused), built once. */
    private readonly schemas: Map<string, z.ZodObject>;

    constructor(private readonly options: AuditLogOptions<E>) {
        this.schemas = new Map(Object.entries(options.events).map(([type, schema]) => [type, schema.strict()]));
        for (const [type, schema] of Object.entries(options.events)) {
            const clash = Object.keys(schema.shape).find((field) => RESERVED_FIELDS.has(field));
            if (clash) throw new Error(`audit: event '${type}' declares the reserved field '${clash}'`);
        }
        this.rotation = options.rotation ?? auditRotationSchema.parse({});
        mkdirSync(options.dir, { recursive: true, mode: 0o700 });
        this.file = path.join(options.dir, auditFileName(options.service));
        this.fd = openSync(this.file, "a+", 0o600);
        // The live file may just have been made (here, or by a rotation a crash cut short): its entry must be durable
        // before any line in it is.
        syncDirectorySync(options.dir);
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
        const from = end.complete > 0 ? end : segmentsEnd(options.dir, options.service);
        this.seq = from.seq;
        this.prev = from.hash;
        this.committedBytes = end.complete;
        this.firstSeq = end.complete > 0 ? firstSeqOf(this.fd) : from.seq + 1;
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
        if (this.committedBytes > 0 && this.committedBytes + bytes.length > this.rotation.maxFileBytes) await this.rotate();
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

    /**
     * Renames the live file to its segment and opens a new, empty live file, synced into the directory before any line
     * is written to it. A crash leaves the old state or the new one: a live file full as before, or no live file or an
     * empty one, from which the next start resumes at the newest segment's end. A failure is reported and leaves the
     * descriptor on the file the group is then written to (a rename done stays done: the next attempt only opens).
     */
    private async rotate(): Promise<void> {
        const { dir, service } = this.options;
        try {
            if (!this.renamed) {
                const segment = path.join(dir, auditSegmentName(service, this.firstSeq));
                // rename() would replace a segment already there (copied back by hand): refuse rather than lose it.
                if (existsSync(segment)) throw new Error(`${segment} already exists`);
                await auditIo.rename(this.file, segment);
                this.renamed = true;
            }
            const fd = openSync(this.file, "a+", 0o600);
            try {
                await auditIo.syncDirectory(dir);
            } catch (error) {
                closeSync(fd);
                throw error;
            }
            closeSync(this.fd);
            this.fd = fd;
            this.renamed = false;
            this.committedBytes = 0;
            this.firstSeq = this.seq + 1;
        } catch (error) {
            this.options.onProblem({ kind: "rotate_failed", error: (error as Error).message.slice(0, 200) });
            return;
        }
        await this.prune();
    }

    /** Deletes the oldest segments past `keepSegments` (a resurrected one after a crash is harmless: it goes next time). */
    private async prune(): Promise<void> {
        const { dir, service } = this.options;
        try {
            const segments = segmentsOf(dir, service, await readdir(dir));
            for (const { file } of segments.slice(0, Math.max(0, segments.length - this.rotation.keepSegments))) await unlink(file);
        } catch (error) {
            this.options.onProblem({ kind: "prune_failed", error: (error as Error).message.slice(0, 200) });
        }
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
