// Metering: what a request may cost before it goes, and what it did cost as its response streams past.
// Pure: bytes in, decisions and counts out.
import { StringDecoder } from "node:string_decoder";
import { type MeterState, NO_USAGE, type ProviderSpec, type RequestTarget, type SseEvent, type Usage, type WireFormat } from "../../providers/types";
import { WIRE_FORMATS, classifyRoute } from "../../providers/index";

/** A wire format's id (providers/<id>.ts): anthropic-messages, openai-chat, ... */
export type ApiFormat = string;

export type RequestPlan =
    | { kind: "refused"; reason: string }
    | { kind: "metered"; format: ApiFormat; model: string; stream: boolean; maxOutputTokens: number; body: Buffer; hideUsageChunk: boolean };

function wireFormat(id: ApiFormat): WireFormat {
    const format = WIRE_FORMATS.get(id);
    if (!format) throw new Error(`no wire format '${id}'`);
    return format;
}

/** Which endpoints cost money (their wire format), which are free, and (undefined) which are not let through at all. */
export function classifyEndpoint(provider: ProviderSpec, method: string, route: string): ApiFormat | "free" | undefined {
    const meter = classifyRoute(provider, method, route);
    return meter === undefined || meter === "free" ? meter : meter.id;
}

/** Whether a response of this format may be an SSE stream (embeddings never are, whatever their content type says). */
export function mayStream(format: ApiFormat): boolean {
    return !wireFormat(format).neverStreams;
}

/**
 * Reads a metered request and rewrites its body where metering needs it: an output cap where the client set
 * none (so the reservation bounds the cost), and a usage report on streams that would not send one (then
 * hidden from the client). Each wire format says how (providers/<id>.ts).
 */
export function planRequest(format: ApiFormat, body: Buffer, defaultMaxOutputTokens: number, target: RequestTarget = { route: "", query: "" }): RequestPlan {
    let json: Record<string, unknown>;
    try {
        json = JSON.parse(body.toString("utf8"));
    } catch {
        return { kind: "refused", reason: "body_not_json" };
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) return { kind: "refused", reason: "body_not_json" };
    const outcome = wireFormat(format).plan(json, target, defaultMaxOutputTokens);
    if (outcome.kind === "refused") return outcome;
    const { model, stream, maxOutputTokens, hideUsageChunk, rewritten } = outcome;
    return { kind: "metered", format, model, stream, maxOutputTokens, hideUsageChunk, body: rewritten ? Buffer.from(JSON.stringify(json)) : body };
}

export interface MeterResult {
    usage: Usage;
    /** The model the upstream says it served (falls back to the requested one). */
    model: string | undefined;
    /** A terminal event (or a whole JSON body) was seen. */
    complete: boolean;
    /** Usage was reported by the upstream at all. */
    reported: boolean;
    /** A whole (non-streamed) body whose usage could not be read: its cost is unknown, so it is billed at its reservation. */
    unmeasured: boolean;
    problems: string[];
}

/** Splits an SSE byte stream into whole events, keeping each event's exact bytes and separator. */
class SseSplitter {
    private readonly decoder = new StringDecoder("utf8");
    private pending = "";

    push(chunk: Buffer): string[] {
        this.pending += this.decoder.write(chunk);
        const events: string[] = [];
        let start = 0;
        for (;;) {
            // indexOf, not a regex: this runs on every chunk of every metered stream.
            const end = eventEnd(this.pending.indexOf("\n\n", start), this.pending.indexOf("\r\n\r\n", start));
            if (end < 0) break;
            events.push(this.pending.slice(start, end));
            start = end;
        }
        if (start > 0) this.pending = this.pending.slice(start);
        return events;
    }

    rest(): string {
        return this.pending + this.decoder.end();
    }

    /** Whether a partial event is held (the stream is between events when it is not). */
    get inEvent(): boolean {
        return this.pending.length > 0;
    }
}

/**
 * The events that carry usage or end a stream, in the formats whose events name themselves on their first
 * line. Everything else (the bulk: content deltas) is skipped as bytes, without decoding.
 */
const NAMED_EVENTS = new Map([...WIRE_FORMATS.values()].flatMap((f) => (f.namedEvents ? [[f.id, f.namedEvents.map((m) => Buffer.from(m))] as const] : [])));
const EVENT_FIELD = Buffer.from("event:");
const EMPTY = Buffer.alloc(0);
const LF_LF = Buffer.from("\n\n");
const CRLF_CRLF = Buffer.from("\r\n\r\n");
const LONGEST_MARKER = 32;

/** Whether the bytes after the carry's last line break could be the start of an `event:` line cut by the seam. */
function mayStraddle(carry: Buffer): boolean {
    const lineStart = carry.lastIndexOf(0x0a) + 1;
    const partial = carry.length - lineStart;
    if (partial === 0) return false;
    // Either the partial line is a prefix of "event:", or it already holds "event:" and a cut-off name.
    const compared = Math.min(partial, EVENT_FIELD.length);
    return carry.compare(EVENT_FIELD, 0, compared, lineStart, lineStart + compared) === 0;
}

/**
 * Offset of the first `event:` line naming one of `names` (a name cut off by the end of `bytes` counts, to be
 * safe), or -1. Offset 0 starts a line only when `atLineStart`. Searches for the names themselves, so a chunk
 * of content deltas costs one native scan per name, not a call per event.
 */
function firstEventMarker(bytes: Buffer, names: Buffer[], atLineStart: boolean): number {
    let first = -1;
    for (const name of names) {
        for (let from = 0; ; ) {
            const hit = bytes.indexOf(name, from);
            if (hit < 0 || (first >= 0 && hit > first)) break;
            from = hit + 1;
            const at = eventFieldBefore(bytes, hit, atLineStart);
            if (at >= 0) {
                first = first < 0 ? at : Math.min(first, at);
                break;
            }
        }
    }
    return first >= 0 ? first : cutOffEventMarker(bytes, names, atLineStart);
}

/** Where the `event:` field starts when the name at `nameAt` is the value of an `event:` line, or -1. */
function eventFieldBefore(bytes: Buffer, nameAt: number, atLineStart: boolean): number {
    const at = bytes[nameAt - 1] === 0x20 ? nameAt - 1 - EVENT_FIELD.length : nameAt - EVENT_FIELD.length;
    if (at < 0 || bytes.compare(EVENT_FIELD, 0, EVENT_FIELD.length, at, at + EVENT_FIELD.length) !== 0) return -1;
    return (at === 0 ? atLineStart : bytes[at - 1] === 0x0a) ? at : -1;
}

/** The last line when it is an `event:` line whose value is cut off by the end of `bytes` and could be one of `names`. */
function cutOffEventMarker(bytes: Buffer, names: Buffer[], atLineStart: boolean): number {
    const at = bytes.lastIndexOf(0x0a) + 1;
    if ((at === 0 && !atLineStart) || bytes.length - at < EVENT_FIELD.length) return -1;
    if (bytes.compare(EVENT_FIELD, 0, EVENT_FIELD.length, at, at + EVENT_FIELD.length) !== 0) return -1;
    const name = bytes[at + EVENT_FIELD.length] === 0x20 ? at + EVENT_FIELD.length + 1 : at + EVENT_FIELD.length;
    for (const candidate of names) {
        const available = Math.min(candidate.length, bytes.length - name);
        if (available <= 0 || bytes.compare(candidate, 0, available, name, name + available) === 0) return at;
    }
    return -1;
}

/** Where an event ends, given the first `\n\n` and `\r\n\r\n` after its start (-1 when absent): just past the earlier. */
function eventEnd(lf: number, crlf: number): number {
    if (crlf >= 0 && (lf < 0 || crlf + 2 <= lf)) return crlf + 4;
    return lf >= 0 ? lf + 2 : -1;
}

/** The offset just past the first blank line (an event's end) in `bytes`, or -1. */
function separatorEnd(bytes: Buffer): number {
    return eventEnd(bytes.indexOf(LF_LF), bytes.indexOf(CRLF_CRLF));
}

/** The event's name when its first line names it (as both providers write them); cheap, no full parse. */
function leadingEventName(event: string): string | undefined {
    if (!event.startsWith("event:")) return undefined;
    const end = event.indexOf("\n");
    return event.slice(6, end < 0 ? undefined : end).trim();
}

function eventData(event: string): string {
    const data: string[] = [];
    for (const line of event.split(/\r?\n/)) if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    return data.join("\n");
}

/** Bytes of streamed event data per output token when a stream ends before reporting its output count. */
export const BYTES_PER_UNREPORTED_TOKEN = 4;

/**
 * Watches one response go by. `push` returns what to send the client now: the chunk itself, or for OpenAI
 * streams whose usage we asked for, the whole events received so far minus that usage chunk.
 */
export class ResponseMeter {
    /** SSE only: a JSON body needs no splitter (nor its StringDecoder). */
    private readonly splitter: SseSplitter | undefined;
    private readonly jsonChunks: Buffer[] = [];
    private jsonBytes = 0;
    private readonly state: MeterState = { usage: { ...NO_USAGE }, model: undefined, complete: false, reported: false, outputReported: false, problems: [] };
    private readonly wire: WireFormat;
    private readonly markers: Buffer[] | undefined;
    private streamedBytes = 0;
    /** Bytes kept from the end of the last skipped chunk, so a marker split across chunks is still found. */
    private carry: Buffer = EMPTY;
    /** Whether the first byte of the next window (carry, then chunk) starts a line. */
    private windowStartsLine = true;
    private capturing = false;

    constructor(
        format: ApiFormat,
        private readonly sse: boolean,
        private readonly hideUsageChunk: boolean,
        /** The request's output cap: the upstream cannot have produced more, whatever an estimate from bytes says. */
        private readonly maxOutputTokens: number,
        private readonly maxJsonBytes = 16 * 1024 * 1024,
    ) {
        this.wire = wireFormat(format);
        this.markers = NAMED_EVENTS.get(format);
        this.splitter = sse ? new SseSplitter() : undefined;
    }

    push(chunk: Buffer): Buffer[] {
        if (!this.sse) {
            if (this.jsonBytes + chunk.length <= this.maxJsonBytes) this.jsonChunks.push(chunk);
            this.jsonBytes += chunk.length;
            return [chunk];
        }
        this.streamedBytes += chunk.length;
        if (this.markers && !this.hideUsageChunk) {
            this.skim(chunk, this.markers);
            return [chunk];
        }
        const events = this.splitter!.push(chunk);
        if (!this.hideUsageChunk) {
            for (const event of events) this.observe(event);
            return [chunk];
        }
        const forward: Buffer[] = [];
        for (const event of events) if (!this.observe(event)) forward.push(Buffer.from(event));
        return forward;
    }

    /**
     * Decodes only the events that matter, each from its `event:` line to its blank line; between them, searches
     * the raw bytes for the next one. This keeps metering cheap on long streams of content deltas.
     */
    private skim(chunk: Buffer, markers: Buffer[]) {
        let rest: Buffer | undefined = chunk;
        while (rest && rest.length > 0) {
            if (!this.capturing) {
                rest = this.fromNextMarker(rest, markers);
                if (!rest) return;
                this.capturing = true;
            }
            // Up to the next blank line: the end of the captured event, or (when the blank line straddled the
            // seam) of a later one, which only decodes a little more.
            const end = separatorEnd(rest);
            for (const event of this.splitter!.push(end < 0 ? rest : rest.subarray(0, end))) this.observe(event);
            rest = end < 0 ? undefined : rest.subarray(end);
            if (!this.splitter!.inEvent) {
                // Between events: the next byte starts one, and so a line.
                this.capturing = false;
                this.windowStartsLine = true;
            }
        }
    }

    /** The bytes from the next marked event on (carried bytes included), or undefined, keeping a carry for the seam. */
    private fromNextMarker(chunk: Buffer, markers: Buffer[]): Buffer | undefined {
        // Positions below are in carry + chunk, whose first byte starts a line when windowStartsLine.
        const carry = this.carry;
        this.carry = EMPTY;
        if (carry.length > 0 && mayStraddle(carry)) {
            // A marker may straddle the seam: look there (a few bytes) before looking at the chunk alone.
            const seam = Buffer.concat([carry, chunk.subarray(0, LONGEST_MARKER)]);
            const found = firstEventMarker(seam, markers, this.windowStartsLine);
            if (found >= 0 && found < carry.length) return Buffer.concat([carry, chunk]).subarray(found);
        }
        const at = firstEventMarker(chunk, markers, carry.length > 0 ? carry[carry.length - 1] === 0x0a : this.windowStartsLine);
        if (at >= 0) return chunk.subarray(at);
        const total = carry.length + chunk.length;
        const keep = Math.min(LONGEST_MARKER, total);
        const start = total - keep;
        const byteAt = (i: number) => (i < carry.length ? carry[i] : chunk[i - carry.length]);
        this.windowStartsLine = start === 0 ? this.windowStartsLine : byteAt(start - 1) === 0x0a;
        // A view, not a copy: it keeps one chunk alive until the next.
        this.carry = keep <= chunk.length ? chunk.subarray(chunk.length - keep) : Buffer.concat([carry.subarray(carry.length - (keep - chunk.length)), chunk]);
        return undefined;
    }

    /** Ends the meter: what the response reported, and whatever bytes were still held back. */
    end(): { result: MeterResult; rest: Buffer[] } {
        const rest: Buffer[] = [];
        const state = this.state;
        if (this.sse) {
            const tail = this.splitter!.rest();
            if (tail.trim().length > 0) {
                state.problems.push("stream ended inside an event");
                this.observe(tail);
            }
            if (this.hideUsageChunk && tail.length > 0) rest.push(Buffer.from(tail));
        } else {
            this.observeJson();
        }
        if (!state.complete) state.problems.push(this.sse ? "stream ended without its final event" : "body incomplete");
        if (this.sse && !state.outputReported) {
            // Output the upstream never counted for us is estimated from what streamed, so an aborted stream is not free,
            // and bounded by the output cap, so it never bills past its reservation (event framing inflates the bytes).
            const estimate = Math.min(Math.ceil(this.streamedBytes / BYTES_PER_UNREPORTED_TOKEN), this.maxOutputTokens);
            state.usage.output = Math.max(state.usage.output, estimate);
        }
        const unmeasured = !this.sse && !state.reported;
        if (unmeasured) state.problems.push("no usage in the body: billed at the reservation");
        return { result: { usage: state.usage, model: state.model, complete: state.complete, reported: state.reported, unmeasured, problems: state.problems }, rest };
    }

    /** Reads one SSE event. Returns true when it must be hidden from the client. */
    private observe(raw: string): boolean {
        const event: SseEvent = { raw, name: leadingEventName(raw), data: () => eventData(raw), json: () => this.parse(eventData(raw)) };
        return this.wire.readEvent(event, this.state, this.hideUsageChunk);
    }

    private observeJson() {
        if (this.jsonBytes > this.maxJsonBytes) {
            this.state.problems.push("body too large to meter");
            return;
        }
        const body = this.jsonChunks.length === 1 ? this.jsonChunks[0] : Buffer.concat(this.jsonChunks);
        const parsed = this.parse(body.toString("utf8"));
        if (!parsed) return;
        this.state.complete = true;
        if (typeof parsed.model === "string") this.state.model = parsed.model;
        this.wire.readJson(parsed, this.state);
    }

    private parse(text: string): Record<string, unknown> | undefined {
        try {
            const value = JSON.parse(text);
            return typeof value === "object" && value !== null ? value : undefined;
        } catch {
            this.state.problems.push("unparseable event");
            return undefined;
        }
    }
}
