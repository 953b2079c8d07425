// The ledger on disk: an append-only file of CRC-checked JSON lines, fsynced in groups. A reservation is on
// disk before its request goes upstream; a settlement is on disk before it counts as committed.
import { closeSync, existsSync, fdatasync, fstatSync, fsyncSync, ftruncate, openSync, readFileSync, renameSync, write, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import path from "node:path";
import { crc32 } from "node:zlib";
import type { LedgerRecord } from "./budget";

/** The file system calls of the append path, in one object so tests can make them fail (a full or read-only volume). */
export const ledgerIo = {
    write: promisify(write) as (fd: number, buffer: Buffer, offset: number, length: number) => Promise<{ bytesWritten: number }>,
    fdatasync: promisify(fdatasync),
    ftruncate: promisify(ftruncate),
};

/** How long failed settlements wait before they are written again. */
export const RETRY_MS = 1000;

export function encodeRecord(record: LedgerRecord): string {
    const json = JSON.stringify(record);
    return `${crc32(json).toString(16).padStart(8, "0")} ${json}\n`;
}

export interface Replay {
    records: LedgerRecord[];
    /** A last line cut short by a crash mid-write: never committed (its fsync had not returned). */
    tornTail?: { line: number; bytes: number };
}

export class LedgerCorruptError extends Error {}

/** Reads a ledger file. A bad line anywhere but the last is corruption: reported, and startup refused. */
export function replayLedger(text: string, file = "ledger"): Replay {
    const records: LedgerRecord[] = [];
    const lines = text.split("\n");
    const endsClean = text.length === 0 || text.endsWith("\n");
    const complete = endsClean ? lines.slice(0, -1) : lines;
    for (const [index, line] of complete.entries()) {
        const isLast = index === complete.length - 1;
        const match = /^([0-9a-f]{8}) (.*)$/.exec(line);
        const valid = match !== null && crc32(match[2]).toString(16).padStart(8, "0") === match[1];
        if (!valid) {
            if (isLast && !endsClean) return { records, tornTail: { line: index + 1, bytes: Buffer.byteLength(line) } };
            throw new LedgerCorruptError(`${file}: line ${index + 1} fails its checksum; the ledger is corrupt, refusing to guess the spend`);
        }
        records.push(JSON.parse(match[2]) as LedgerRecord);
    }
    return { records };
}

/**
 * Appends records with group commit: records queued while a write+fdatasync is in flight go out together in
 * the next one, so concurrent requests share one fsync.
 */
/** How long a lazy record may wait for a sync that some urgent record would have triggered anyway. */
export const LAZY_SYNC_MS = 50;

export class LedgerStore {
    private fd: number;
    private queue: { line: string; retry: boolean; done: (error?: Error) => void }[] = [];
    private flushing = false;
    private lazyTimer: NodeJS.Timeout | undefined;
    private closing = false;
    /** The file's length after the last write that was synced: what a failed write is cut back to. */
    private committedBytes: number;

    private constructor(readonly file: string) {
        this.fd = openSync(file, "a", 0o600);
        this.committedBytes = fstatSync(this.fd).size;
    }

    /**
     * Opens (creating) the ledger, replays it, and starts a fresh file from a snapshot of the replayed state
     * (write, fsync, rename, fsync the directory), so the file never grows without bound across restarts.
     */
    static open(file: string, replay: (records: LedgerRecord[]) => LedgerRecord[], onTornTail: (tail: NonNullable<Replay["tornTail"]>) => void): LedgerStore {
        const text = existsSync(file) ? readFileSync(file, "utf8") : "";
        const result = replayLedger(text, file);
        if (result.tornTail) {
            writeFileSync(`${file}.torn-${Date.now()}`, text.slice(text.lastIndexOf("\n") + 1), { mode: 0o600 });
            onTornTail(result.tornTail);
        }
        const fresh = replay(result.records);
        const temporary = `${file}.compact`;
        writeFileSync(temporary, fresh.map(encodeRecord).join(""), { mode: 0o600 });
        const tfd = openSync(temporary, "r+");
        fsyncSync(tfd);
        closeSync(tfd);
        renameSync(temporary, file);
        const dfd = openSync(path.dirname(file), "r");
        fsyncSync(dfd);
        closeSync(dfd);
        return new LedgerStore(file);
    }

    /**
     * Appends a record; the promise resolves once it is written and fdatasync'd. "now" syncs at once (sharing
     * the sync with whatever else is queued) and rejects when the write fails; "soon" waits up to LAZY_SYNC_MS
     * for a sync to ride on, and is retried every RETRY_MS until it is written (a settlement must land).
     */
    append(record: LedgerRecord, urgency: "now" | "soon" = "now"): Promise<void> {
        return new Promise((resolve, reject) => {
            this.queue.push({ line: encodeRecord(record), retry: urgency === "soon", done: (error) => (error ? reject(error) : resolve()) });
            if (urgency === "now") this.schedule();
            else this.lazyTimer ??= setTimeout(() => this.schedule(), LAZY_SYNC_MS);
        });
    }

    private schedule() {
        clearTimeout(this.lazyTimer);
        this.lazyTimer = undefined;
        if (this.flushing) return;
        this.flushing = true;
        setImmediate(() => void this.flush());
    }

    /** Off the event loop (libuv's thread pool): streams keep flowing while the disk syncs. */
    private async flush() {
        const batch = this.queue;
        this.queue = [];
        const bytes = Buffer.from(batch.map((b) => b.line).join(""));
        try {
            // A write may take only part of the bytes (a volume filling up): write the rest, or fail trying.
            for (let written = 0; written < bytes.length; ) written += (await ledgerIo.write(this.fd, bytes, written, bytes.length - written)).bytesWritten;
            await ledgerIo.fdatasync(this.fd);
            this.committedBytes += bytes.length;
            for (const item of batch) item.done();
        } catch (caught) {
            // A full volume may take part of the batch: cut it back, so the file never holds a torn line before
            // later records (which replay would take for corruption). If even that fails, the next write's
            // failure says so again.
            await ledgerIo.ftruncate(this.fd, this.committedBytes).catch(() => undefined);
            const retried = this.closing ? [] : batch.filter((item) => item.retry);
            for (const item of batch) if (!retried.includes(item)) item.done(caught as Error);
            if (retried.length > 0) {
                this.queue.unshift(...retried);
                this.lazyTimer ??= setTimeout(() => this.schedule(), RETRY_MS);
            }
        }
        if (this.queue.length > 0 && this.lazyTimer === undefined) void this.flush();
        else this.flushing = false;
    }

    /** Writes and syncs whatever is still queued, then closes the file. */
    async close(): Promise<void> {
        this.closing = true;
        clearTimeout(this.lazyTimer);
        this.lazyTimer = undefined;
        while (this.flushing) await new Promise((resolve) => setTimeout(resolve, 5));
        if (this.queue.length > 0) {
            this.flushing = true;
            await this.flush();
        }
        closeSync(this.fd);
    }
}
