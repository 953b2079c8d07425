import { writeSync } from "node:fs";

/** One JSON object per line on stdout. Callers pass only fields that are safe to print: never keys or tokens. */
export type LogFields = Record<string, string | number | boolean | null | undefined>;

export type LogSink = (line: string) => void;

export function jsonLogger(service: string, sink: LogSink = (line) => process.stdout.write(line)) {
    // Every request writes a line: the fixed head is serialised once, the time once per millisecond, and the fields
    // are serialised as they come rather than copied into one object first (half the cost per line).
    const afterTs = `,"service":${JSON.stringify(service)},"event":`;
    let lastMs = Number.NaN;
    let lastTs = "";
    return (event: string, fields?: LogFields) => {
        const ms = Date.now();
        if (ms !== lastMs) {
            lastMs = ms;
            lastTs = JSON.stringify(new Date(ms).toISOString());
        }
        const rest = fields === undefined ? "{}" : JSON.stringify(fields);
        sink(`{"ts":${lastTs}${afterTs}${JSON.stringify(event)}${rest.length > 2 ? `,${rest.slice(1)}` : "}"}\n`);
    };
}

export type Logger = ReturnType<typeof jsonLogger>;

/** The part of a stream a LogBuffer writes to (process.stdout in a service). */
export interface LogOutput {
    write(text: string): boolean;
    once(event: "drain", listener: () => void): unknown;
}

/** What a LogBuffer holds at most while its output is blocked, by default: past it, lines are dropped and counted. */
export const LOG_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * Batches log lines into one write per turn of the event loop, never blocks, and never grows without bound: while
 * the output is blocked (a slow reader of stdout) lines wait here, up to `maxBytes`; past that they are dropped and
 * counted in `dropped`, so a stalled log reader costs log lines, never memory or latency.
 */
export class LogBuffer {
    private lines: string[] = [];
    private bytes = 0;
    private scheduled = false;
    private blocked = false;
    /** Lines dropped because the buffer was full. */
    dropped = 0;

    constructor(
        private readonly output: LogOutput,
        private readonly maxBytes = LOG_BUFFER_BYTES,
        private readonly defer: (flush: () => void) => void = setImmediate,
    ) {}

    readonly sink: LogSink = (line) => {
        if (this.bytes + line.length > this.maxBytes) {
            this.dropped++;
            return;
        }
        this.lines.push(line);
        this.bytes += line.length;
        if (!this.scheduled && !this.blocked) {
            this.scheduled = true;
            this.defer(this.flush);
        }
    };

    /** Writes what is held in one write; if the output says it is full, waits for its drain before the next. */
    readonly flush = () => {
        this.scheduled = false;
        if (this.blocked || this.lines.length === 0) return;
        const text = this.lines.join("");
        this.lines = [];
        this.bytes = 0;
        if (!this.output.write(text)) {
            this.blocked = true;
            this.output.once("drain", () => {
                this.blocked = false;
                this.flush();
            });
        }
    };

    /** At exit: whatever is still held goes out synchronously (best effort: a full pipe keeps it). */
    flushSync(fd = 1) {
        if (this.lines.length === 0) return;
        try {
            writeSync(fd, this.lines.join(""));
        } catch {
            // EAGAIN on a full non-blocking pipe: those lines are lost with the process
        }
        this.lines = [];
        this.bytes = 0;
    }
}
