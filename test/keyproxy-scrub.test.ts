// The response scrubber on its own: every secret masked wherever chunk boundaries fall, nothing else touched, and
// never more held back than a secret's length minus one.
import { describe, expect, it } from "vitest";
import { type ResponseSecrets, StreamScrubber } from "../proxy-image/src/scrub";
import { AGENTS, REAL_KEYS, TOKENS } from "./support/keyProxyHarness";

const registered = new Set(AGENTS.map((a) => a.credentialSha256));
const secrets: ResponseSecrets = { literals: Object.values(REAL_KEYS).map((k) => Buffer.from(k)), isCredential: (sha256) => registered.has(sha256) };
const longest = Math.max(...Object.values(REAL_KEYS).map((k) => k.length), TOKENS.bart.length);
const masked = (secret: string) => "[redacted]".padEnd(secret.length, "*");

/** Feeds `body` in the given chunks; checks the hold-back bound after every push; returns what came out. */
function scrub(chunks: Buffer[]): string {
    const scrubber = new StreamScrubber(secrets);
    const out: Buffer[] = [];
    let into = 0;
    let outOf = 0;
    for (const chunk of chunks) {
        into += chunk.length;
        const piece = scrubber.push(chunk);
        outOf += piece.length;
        out.push(piece);
        expect(into - outOf).toBeLessThanOrEqual(longest - 1);
    }
    out.push(scrubber.end());
    return Buffer.concat(out).toString("latin1");
}

const splitAt = (bytes: Buffer, cuts: number[]) => [0, ...cuts, bytes.length].slice(1).map((end, i, ends) => bytes.subarray(i === 0 ? 0 : ends[i - 1], end));

describe("StreamScrubber", () => {
    describe.each([
        ["the real Anthropic key", REAL_KEYS.anthropic],
        ["the real OpenAI key", REAL_KEYS.openai],
        ["a registered agent's credential", TOKENS.bart],
        ["another registered agent's credential", TOKENS.lisa],
    ])("%s", (_name, secret) => {
        const body = Buffer.from(`data: {"echo":"${secret}","again":"${secret}"}\n\nsk-and-ocp_-lookalikes stay\n\n`);
        const expected = body.toString("latin1").replaceAll(secret, masked(secret));

        it("is masked by as many bytes wherever one cut falls", () => {
            for (let cut = 0; cut <= body.length; cut++) expect(scrub(splitAt(body, [cut])), `cut at ${cut}`).toBe(expected);
        });

        it("is masked when the body arrives a byte or two at a time", () => {
            for (const size of [1, 2, 3]) expect(scrub(Array.from({ length: Math.ceil(body.length / size) }, (_, i) => body.subarray(i * size, (i + 1) * size)))).toBe(expected);
        });
    });

    it.each([
        ["an unregistered credential-shaped token", `ocp_${"x".repeat(48)}`],
        ["a credential-shaped token one character short", TOKENS.bart.slice(0, -1)],
        ["a key's prefix at the very end", REAL_KEYS.openai.slice(0, 20)],
        ["text with no secret", "event: content_block_delta\ndata: {\"text\":\"hello\"}\n\n"],
    ])("leaves %s untouched", (_name, text) => {
        const body = Buffer.from(text);
        for (let cut = 0; cut <= body.length; cut++) expect(scrub(splitAt(body, [cut]))).toBe(text);
    });

    it("passes a chunk that cannot end in a secret's beginning as it is, without copying or holding", () => {
        const chunk = Buffer.from("data: {\"text\":\"hello\"}\n\n");
        expect(new StreamScrubber(secrets).push(chunk)).toBe(chunk);
    });
});
