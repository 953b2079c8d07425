// Keeps secrets out of what upstreams answer: the real keys and the agents' credentials, wherever an upstream echoes
// them in a successful body. Pure: bytes in, bytes out. Streams stay streams: at a chunk's end only bytes that could
// begin a secret are held back (never more than the longest secret's length minus one), and a secret is masked by
// as many bytes, so a body's length, and its Content-Length, stay true.
import { createHash } from "node:crypto";
import { AGENT_CREDENTIAL } from "../../runtime/registry";

export interface ResponseSecrets {
    /** Secrets known verbatim: the real provider keys. */
    literals: readonly Buffer[];
    /** Whether a credential's sha256 (hex) is a registered agent's: the proxy never holds the credentials themselves. */
    isCredential(sha256: string): boolean;
}

const MASK = "[redacted]";
const EMPTY = Buffer.alloc(0);
const CREDENTIAL_PREFIX = Buffer.from(AGENT_CREDENTIAL.prefix);
const CREDENTIAL_LENGTH = CREDENTIAL_PREFIX.length + AGENT_CREDENTIAL.randomChars;

const isAlphanumeric = (byte: number) => (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);

function allAlphanumeric(bytes: Buffer, from: number, to: number): boolean {
    for (let i = from; i < to; i++) if (!isAlphanumeric(bytes[i])) return false;
    return true;
}

/** Where each secret lies in `bytes`, as [start, end) pairs. */
function findSecrets(bytes: Buffer, secrets: ResponseSecrets): [number, number][] {
    const found: [number, number][] = [];
    for (const literal of secrets.literals) {
        for (let at = bytes.indexOf(literal); at >= 0; at = bytes.indexOf(literal, at + 1)) found.push([at, at + literal.length]);
    }
    for (let at = bytes.indexOf(CREDENTIAL_PREFIX); at >= 0; at = bytes.indexOf(CREDENTIAL_PREFIX, at + 1)) {
        const end = at + CREDENTIAL_LENGTH;
        if (end > bytes.length || !allAlphanumeric(bytes, at + CREDENTIAL_PREFIX.length, end)) continue;
        if (secrets.isCredential(createHash("sha256").update(bytes.subarray(at, end)).digest("hex"))) found.push([at, end]);
    }
    return found;
}

/** `bytes` with every secret masked: the same buffer when there is none (the common case), else a masked copy. */
function maskSecrets(bytes: Buffer, secrets: ResponseSecrets): Buffer {
    const found = findSecrets(bytes, secrets);
    if (found.length === 0) return bytes;
    const masked = Buffer.from(bytes);
    for (const [start, end] of found) masked.write(MASK.padEnd(end - start, "*"), start, end - start, "latin1");
    return masked;
}

/** Whether `bytes` from `at` to its end is the beginning of a credential, cut off. */
function beginsCredential(bytes: Buffer, at: number): boolean {
    const tail = bytes.length - at;
    const prefix = Math.min(tail, CREDENTIAL_PREFIX.length);
    return bytes.compare(CREDENTIAL_PREFIX, 0, prefix, at, at + prefix) === 0 && allAlphanumeric(bytes, at + prefix, bytes.length);
}

/** How many bytes at the end of `bytes` could be the beginning of a secret the next chunk completes. */
function heldBack(bytes: Buffer, secrets: ResponseSecrets): number {
    let earliest = bytes.length;
    for (const literal of secrets.literals) {
        for (let at = bytes.indexOf(literal[0], Math.max(0, bytes.length - literal.length + 1)); at >= 0 && at < earliest; at = bytes.indexOf(literal[0], at + 1)) {
            if (bytes.compare(literal, 0, bytes.length - at, at) === 0) {
                earliest = at;
                break;
            }
        }
    }
    for (let at = bytes.indexOf(CREDENTIAL_PREFIX[0], Math.max(0, bytes.length - CREDENTIAL_LENGTH + 1)); at >= 0 && at < earliest; at = bytes.indexOf(CREDENTIAL_PREFIX[0], at + 1)) {
        if (beginsCredential(bytes, at)) {
            earliest = at;
            break;
        }
    }
    return bytes.length - earliest;
}

/** Scrubs one response body as it streams through. */
export class StreamScrubber {
    private carry: Buffer = EMPTY;

    constructor(private readonly secrets: ResponseSecrets) {}

    /** What may be sent now: the chunk (after what was held back) with secrets masked, minus a tail that may begin one. */
    push(chunk: Buffer): Buffer {
        const window = maskSecrets(this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk, this.secrets);
        const hold = heldBack(window, this.secrets);
        this.carry = hold > 0 ? window.subarray(window.length - hold) : EMPTY;
        return hold > 0 ? window.subarray(0, window.length - hold) : window;
    }

    /** The held-back tail at the body's end: no secret completes it any more. */
    end(): Buffer {
        const rest = this.carry;
        this.carry = EMPTY;
        return rest;
    }
}
