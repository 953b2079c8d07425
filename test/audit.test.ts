// The audit trail (runtime/audit.ts): the hash chain and its verifier, resuming after a restart or a crash, group
// fsync, rotation into segments the chain runs across, and that nothing undeclared (a token, a message) can be
// written into it.
import { appendFileSync, closeSync, openSync, readFileSync, readdirSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import {
    type AuditEvents,
    AuditLog,
    type AuditRotation,
    auditField,
    auditIo,
    auditSegmentName,
    auditStreams,
    encodeAuditLine,
    readAuditLines,
    shortDigest,
    verifyChain,
    verifyDirectory,
} from "../runtime/audit";
import { tailCommand, verifyCommand } from "../scripts/audit.mts";
import { tempDir } from "./support/tempDirs";

const EVENTS = {
    auth_failed: z.object({ reason: auditField.name }),
    rule_hit: z.object({ user: auditField.name, agent: auditField.name, rule: auditField.name, textSha256: auditField.digest }),
} satisfies AuditEvents;

const TOKEN = "igt_Zk3QvX9pLm2RtY7wB4nC8dF1gH6jK0sA5eU";

const problems: unknown[] = [];
const open: AuditLog<typeof EVENTS>[] = [];
function openLog(dir: string, rotation?: AuditRotation) {
    const log = new AuditLog({ dir, service: "ingress", events: EVENTS, rotation, onProblem: (problem) => problems.push(problem) });
    open.push(log);
    return log;
}

afterEach(async () => {
    for (const log of open.splice(0)) await log.close();
    problems.length = 0;
    vi.restoreAllMocks();
});

async function writeStream(lines = 6): Promise<{ dir: string; file: string }> {
    const dir = tempDir("audit");
    const log = openLog(dir);
    await Promise.all(
        Array.from({ length: lines }, (_, i) =>
            i % 2 === 0 ? log.record({ type: "auth_failed", reason: "no_token" }) : log.record({ type: "rule_hit", user: "ann", agent: i === 1 ? "bart" : "lisa", rule: "ignore-previous", textSha256: shortDigest(`m${i}`) }),
        ),
    );
    return { dir, file: log.file };
}

const rewrite = (file: string, change: (lines: string[]) => string[]) => {
    const lines = readFileSync(file, "utf8").split("\n").slice(0, -1);
    writeFileSync(file, `${change(lines).join("\n")}\n`);
};

/** A line changed and given the hash of its new content (which only the next line's prev can give away). */
const rehash = (line: string, change: (body: Record<string, unknown>) => void) => {
    const { hash: _hash, ...body } = JSON.parse(line) as Record<string, unknown>;
    change(body);
    return encodeAuditLine(body as Parameters<typeof encodeAuditLine>[0]).line;
};

describe("the chain", () => {
    it("verifies a stream as written, one seq after another, each line's prev the hash before", async () => {
        const { file } = await writeStream();
        const verdict = verifyChain(readFileSync(file, "utf8"));
        expect(verdict).toMatchObject({ ok: true, lines: 6 });
        const lines = readAuditLines(readFileSync(file, "utf8"));
        expect(lines.map((l) => l.seq)).toEqual([1, 2, 3, 4, 5, 6]);
        for (let i = 1; i < lines.length; i++) expect(lines[i].prev).toBe(lines[i - 1].hash);
    });

    const forged = (before: string) => {
        const { seq, hash } = JSON.parse(before) as { seq: number; hash: string };
        return encodeAuditLine({ seq: seq + 1, ts: new Date().toISOString(), service: "ingress", type: "auth_failed", reason: "forged", prev: hash }).line;
    };

    it.each<[string, (lines: string[]) => string[], number, RegExp]>([
        ["a field edited", (l) => l.map((line, i) => (i === 2 ? line.replace('"no_token"', '"bad_token"') : line)), 3, /hash does not match/],
        ["the last line edited", (l) => l.map((line, i) => (i === 5 ? line.replace('"lisa"', '"bart"') : line)), 6, /hash does not match/],
        ["a line edited and its hash recomputed", (l) => l.map((line, i) => (i === 2 ? rehash(line, (b) => (b.reason = "bad_token")) : line)), 4, /prev does not match line 3/],
        ["a line deleted", (l) => l.filter((_, i) => i !== 2), 3, /seq 4 where 3 was due/],
        ["the first line deleted", (l) => l.slice(1), 1, /seq 2 where 1 was due/],
        ["two lines swapped", (l) => [l[0], l[2], l[1], ...l.slice(3)], 2, /seq 3 where 2 was due/],
        ["a line duplicated", (l) => [...l.slice(0, 3), l[2], ...l.slice(3)], 4, /seq 3 where 4 was due/],
        ["a forged line inserted, chained to the line before it", (l) => [...l.slice(0, 2), forged(l[1]), ...l.slice(2)], 4, /seq 3 where 4 was due/],
        ["a line replaced by text", (l) => l.map((line, i) => (i === 1 ? "{}" : line)), 2, /not an audit line/],
    ])("fails on %s, naming line %i", async (_, change, line, problem) => {
        const { dir, file } = await writeStream();
        rewrite(file, change);
        const verdict = verifyChain(readFileSync(file, "utf8"));
        expect(verdict).toMatchObject({ ok: false, line });
        expect(verdict.ok === false && verdict.problem).toMatch(problem);
        const printed: string[] = [];
        expect(verifyCommand(dir, (text) => printed.push(text))).toBe(1);
        expect(printed).toEqual([expect.stringContaining(`BROKEN  ${file}:${line}: `)]);
    });

    it("verify passes every intact stream in a directory and fails on an empty one", async () => {
        const { dir } = await writeStream();
        const printed: string[] = [];
        expect(verifyCommand(dir, (text) => printed.push(text))).toBe(0);
        expect(printed).toEqual([expect.stringMatching(/^ok .*ingress\.audit\.jsonl: 6 lines, chain intact$/)]);
        expect(verifyCommand(tempDir("audit-empty"), () => undefined)).toBe(1);
    });
});

describe("restarts and crashes", () => {
    it("resumes the chain where the file ends", async () => {
        const { dir, file } = await writeStream(3);
        await open.pop()!.close();
        const again = openLog(dir);
        await again.record({ type: "auth_failed", reason: "bad_token" });
        expect(verifyChain(readFileSync(file, "utf8"))).toMatchObject({ ok: true, lines: 4 });
    });

    it("moves a torn last line aside, reports it, and continues a chain that verifies", async () => {
        const { dir, file } = await writeStream(3);
        await open.pop()!.close();
        appendFileSync(file, '{"seq":4,"ts":"2026-');
        expect(verifyChain(readFileSync(file, "utf8"))).toMatchObject({ ok: false, line: 4, problem: expect.stringMatching(/incomplete last line/) });
        const again = openLog(dir);
        expect(problems).toEqual([{ kind: "torn_tail", bytes: 20, savedAs: expect.stringMatching(/ingress\.audit\.jsonl\.torn-\d+$/) }]);
        await again.record({ type: "auth_failed", reason: "bad_token" });
        expect(verifyChain(readFileSync(file, "utf8"))).toMatchObject({ ok: true, lines: 4 });
        expect(readdirSync(dir).filter((name) => name.includes(".torn-"))).toHaveLength(1);
    });

    it("refuses to start on a last line that is not an audit line", async () => {
        const { dir, file } = await writeStream(2);
        await open.pop()!.close();
        appendFileSync(file, "garbage\n");
        expect(() => openLog(dir)).toThrow(/last line is not an audit line/);
    });

    it("drops a group whose write fails, reports it, and keeps the chain on disk whole", async () => {
        const dir = tempDir("audit");
        const log = openLog(dir);
        await log.record({ type: "auth_failed", reason: "no_token" });
        vi.spyOn(auditIo, "fdatasync").mockRejectedValueOnce(new Error("ENOSPC: no space left on device"));
        await log.record({ type: "auth_failed", reason: "bad_token" });
        expect(log.failing).toBe(true);
        expect(problems).toEqual([{ kind: "write_failed", error: "ENOSPC: no space left on device", lost: 1 }]);
        await log.record({ type: "auth_failed", reason: "no_token" });
        expect(log.failing).toBe(false);
        expect(verifyChain(readFileSync(log.file, "utf8"))).toMatchObject({ ok: true, lines: 2 });
    });

    it("writes nothing once closed, not even to a file that took over its descriptor, and reports the event lost", async () => {
        const dir = tempDir("audit");
        const log = openLog(dir);
        await log.record({ type: "auth_failed", reason: "no_token" });
        await log.close();
        const other = path.join(dir, "other.txt");
        const fd = openSync(other, "w");
        try {
            await log.record({ type: "auth_failed", reason: "late" });
        } finally {
            closeSync(fd);
        }
        expect(readFileSync(other, "utf8")).toBe("");
        expect(verifyChain(readFileSync(log.file, "utf8"))).toMatchObject({ ok: true, lines: 1 });
        expect(problems).toEqual([{ kind: "write_failed", error: "the audit stream is closed", lost: 1 }]);
    });

    it("writes events queued together with one fdatasync", async () => {
        const dir = tempDir("audit");
        const log = openLog(dir);
        const syncs = vi.spyOn(auditIo, "fdatasync");
        await Promise.all(Array.from({ length: 50 }, () => log.record({ type: "auth_failed", reason: "no_token" })));
        expect(syncs).toHaveBeenCalledTimes(1);
        expect(verifyChain(readFileSync(log.file, "utf8"))).toMatchObject({ ok: true, lines: 50 });
    });
});

/** Events that must never be written: each with the error that refuses it. */
const REFUSED: [string, Record<string, unknown>, RegExp][] = [
    ["an undeclared field carrying a token", { type: "auth_failed", reason: "bad_token", token: TOKEN }, /Unrecognized key/],
    ["a token in a declared name field", { type: "auth_failed", reason: TOKEN }, /Invalid string/],
    ["message text in a declared field", { type: "rule_hit", user: "ann", agent: "bart", rule: "r", textSha256: "ignore all previous instructions" }, /Invalid string/],
    ["an undeclared event type", { type: "request", authorization: `Bearer ${TOKEN}` }, /undeclared event type 'request'/],
];

describe("nothing secret gets in", () => {
    it.each(REFUSED)("refuses %s", async (_, event, error) => {
        const dir = tempDir("audit");
        const log = openLog(dir);
        expect(() => log.record(event as never)).toThrow(error);
        await log.record({ type: "auth_failed", reason: "no_token" });
        const text = readFileSync(log.file, "utf8");
        expect(text).not.toContain(TOKEN);
        expect(text).not.toContain("ignore all previous");
    });

    it("refuses to declare an event with a field the chain uses itself", () => {
        expect(() => new AuditLog({ dir: tempDir("audit"), service: "x", events: { e: z.object({ prev: auditField.name }) }, onProblem: () => undefined })).toThrow(/reserved field 'prev'/);
    });
});

describe("tail", () => {
    it("reads the last lines of every stream, filtered by agent and service", async () => {
        const { dir } = await writeStream(6);
        writeFileSync(path.join(dir, "other.audit.jsonl"), `${encodeAuditLine({ seq: 1, ts: "2000-01-01T00:00:00.000Z", service: "other", type: "x", agent: "bart", prev: "0".repeat(64) }).line}\n`);
        expect(tailCommand(dir, { agent: "bart", count: 10 }).map((l) => [l.service, l.seq])).toEqual([["other", 1], ["ingress", 2]]);
        expect(tailCommand(dir, { service: "ingress", count: 2 }).map((l) => l.seq)).toEqual([5, 6]);
    });
});

describe("rotation", () => {
    /** Four lines to a file (each about 300 bytes). */
    const SMALL: AuditRotation = { maxFileBytes: 1300, keepSegments: 10 };
    /** The stream's files in chain order: its segments, then its live file. */
    const streamFiles = (dir: string) => (auditStreams(dir).get("ingress") ?? []).map((f) => f.file);
    const fileLines = (file: string) => readAuditLines(readFileSync(file, "utf8"));
    const allLines = (dir: string) => streamFiles(dir).flatMap(fileLines);
    const seqs = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    const segmentFile = (dir: string, firstSeq: number) => path.join(dir, auditSegmentName("ingress", firstSeq));

    /** Records `count` events one group at a time (each on disk before the next), bart and lisa in turn. */
    async function recordEach(log: AuditLog<typeof EVENTS>, count: number) {
        for (let i = 0; i < count; i++) await log.record({ type: "rule_hit", user: "ann", agent: i % 2 === 0 ? "bart" : "lisa", rule: "r", textSha256: shortDigest(`m${i}`) });
    }

    /** A rotating stream of `count` lines. */
    async function rotatedStream(count: number, rotation = SMALL): Promise<string> {
        const dir = tempDir("audit");
        const log = openLog(dir, rotation);
        await recordEach(log, count);
        await log.close();
        return dir;
    }

    /**
     * A stream of `count` lines in its live file, closed, and the rotation that makes the next group rotate it (a
     * size of exactly what it holds).
     */
    async function fullLiveFile(count: number): Promise<{ dir: string; live: string; text: string; rotation: AuditRotation }> {
        const dir = tempDir("audit");
        const log = openLog(dir);
        await recordEach(log, count);
        await log.close();
        const text = readFileSync(log.file, "utf8");
        return { dir, live: log.file, text, rotation: { maxFileBytes: Buffer.byteLength(text), keepSegments: 10 } };
    }

    it("rotates the live file into a segment named by its first seq before a group would take it past the size", async () => {
        const dir = await rotatedStream(22);
        const files = streamFiles(dir);
        expect(files.length).toBeGreaterThanOrEqual(5);
        expect(files.at(-1)).toBe(path.join(dir, "ingress.audit.jsonl"));
        const segments = files.slice(0, -1);
        expect(segments.map((f) => path.basename(f))).toEqual(segments.map((f) => path.basename(f)).sort());
        for (const [i, segment] of segments.entries()) {
            const size = statSync(segment).size;
            expect(path.basename(segment)).toBe(auditSegmentName("ingress", fileLines(segment)[0].seq));
            expect(size).toBeLessThanOrEqual(SMALL.maxFileBytes);
            // rotated because the next line would not have fitted
            expect(size + Buffer.byteLength(readFileSync(files[i + 1], "utf8").split("\n")[0]) + 1).toBeGreaterThan(SMALL.maxFileBytes);
        }
        expect(allLines(dir).map((l) => l.seq)).toEqual(seqs(1, 22));
        expect(problems).toEqual([]);
    });

    it("runs the chain on across segments: each file's first prev is the last hash of the file before, and verify passes", async () => {
        const dir = await rotatedStream(22);
        const files = streamFiles(dir);
        for (let i = 1; i < files.length; i++) expect(fileLines(files[i])[0].prev).toBe(fileLines(files[i - 1]).at(-1)!.hash);
        expect(verifyDirectory(dir).map((r) => r.verdict)).toEqual(files.map(() => expect.objectContaining({ ok: true })));
        const printed: string[] = [];
        expect(verifyCommand(dir, (text) => printed.push(text))).toBe(0);
        expect(printed).toEqual(files.map((file) => `ok      ${file}: ${fileLines(file).length} lines, chain intact`));
    });

    /** A tampering with a stream of 22 lines (five segments of four, the live file with two): returns the file verify must name. */
    type Tamper = (files: string[], dir: string) => string;
    const dropFirstLine = (file: string) => writeFileSync(file, readFileSync(file, "utf8").split("\n").slice(1).join("\n"));
    const editLines = (file: string, change: (lines: string[]) => string[]) => writeFileSync(file, `${change(readFileSync(file, "utf8").split("\n").slice(0, -1)).join("\n")}\n`);

    it.each<[string, Tamper, number, RegExp]>([
        ["a middle segment deleted", (f) => (unlinkSync(f[2]), f[3]), 1, /seq 13 where 9 was due after the file before it/],
        ["a line of a middle segment edited", (f) => (editLines(f[2], (l) => l.map((line, i) => (i === 1 ? line.replace('"lisa"', '"bart"') : line))), f[2]), 2, /hash does not match/],
        ["a middle segment's last line edited, its hash recomputed", (f) => (editLines(f[2], (l) => l.map((line, i) => (i === 3 ? rehash(line, (b) => (b.agent = "bart")) : line))), f[3]), 1, /prev does not match the last line of the file before it/],
        ["a middle segment's last line deleted", (f) => (editLines(f[2], (l) => l.slice(0, -1)), f[3]), 1, /seq 13 where 12 was due after the file before it/],
        ["lines cut from a middle segment's start", (f) => (dropFirstLine(f[2]), f[2]), 1, /seq 10 where 9 was due after the file before it/],
        [
            "two middle segments swapped",
            (f, dir) => {
                const aside = path.join(dir, "aside");
                renameSync(f[1], aside);
                renameSync(f[2], f[1]);
                renameSync(aside, f[2]);
                return f[1];
            },
            1,
            /seq 9 where 5 was due after the file before it/,
        ],
        ["a middle segment renamed to start later, still in order", (f, dir) => (renameSync(f[2], segmentFile(dir, 10)), segmentFile(dir, 10)), 1, /its name says it starts at seq 10, its first line is seq 9/],
        ["the live file's first line deleted", (f) => (dropFirstLine(f[5]), f[5]), 1, /seq 22 where 21 was due after the file before it/],
        ["the oldest segment's first line deleted", (f) => (dropFirstLine(f[0]), f[0]), 1, /seq 2 where its name says 1: lines were cut from its start/],
        ["every segment deleted", (f) => (f.slice(0, -1).forEach((file) => unlinkSync(file)), f[5]), 1, /seq 21 where 1 was due/],
    ])("fails on %s, naming the file and line", async (_, tamper, line, problem) => {
        const dir = await rotatedStream(22);
        const files = streamFiles(dir);
        expect(files.map((file) => fileLines(file).length)).toEqual([4, 4, 4, 4, 4, 2]);
        const broken = tamper(files, dir);
        const printed: string[] = [];
        expect(verifyCommand(dir, (text) => printed.push(text))).toBe(1);
        const first = printed.find((text) => text.startsWith("BROKEN"));
        expect(first).toContain(`BROKEN  ${broken}:${line}: `);
        expect(first).toMatch(problem);
    });

    it("after a broken file checks the next on its own, and says so", async () => {
        const dir = await rotatedStream(22);
        const files = streamFiles(dir);
        editLines(files[2], (l) => l.map((line, i) => (i === 1 ? line.replace('"lisa"', '"bart"') : line)));
        const printed: string[] = [];
        expect(verifyCommand(dir, (text) => printed.push(text))).toBe(1);
        const resumedAt = fileLines(files[3])[0].prev;
        expect(printed.slice(2, 4)).toEqual([
            expect.stringMatching(new RegExp(`^BROKEN  ${files[2]}:2: its hash does not match`)),
            `ok      ${files[3]}: 4 lines, chain intact, resumed from ${resumedAt} (seq 12, checked on its own after the break above)`,
        ]);
        expect(printed[4]).toBe(`ok      ${files[4]}: 4 lines, chain intact`);
    });

    it("keeps only the newest segments; verify notes the oldest kept as resumed, and still catches a cut start", async () => {
        const dir = await rotatedStream(30, { ...SMALL, keepSegments: 2 });
        const files = streamFiles(dir);
        expect(files).toHaveLength(3);
        const lines = allLines(dir);
        expect(lines[0].seq).toBeGreaterThan(1);
        expect(lines.map((l) => l.seq)).toEqual(seqs(lines[0].seq, 30));
        expect(verifyDirectory(dir)[0].verdict).toMatchObject({ ok: true, resumedFrom: { seq: lines[0].seq - 1, hash: lines[0].prev } });
        const printed: string[] = [];
        expect(verifyCommand(dir, (text) => printed.push(text))).toBe(0);
        expect(printed[0]).toBe(`ok      ${files[0]}: ${fileLines(files[0]).length} lines, chain intact, resumed from ${lines[0].prev} (seq ${lines[0].seq - 1}, in no file here: older segments deleted)`);
        expect(problems).toEqual([]);

        dropFirstLine(files[0]);
        printed.length = 0;
        expect(verifyCommand(dir, (text) => printed.push(text))).toBe(1);
        expect(printed[0]).toMatch(new RegExp(`^BROKEN  ${files[0]}:1: seq ${lines[0].seq + 1} where its name says ${lines[0].seq}`));
    });

    it("after a restart continues the chain in the live file and rotates on from it", async () => {
        const dir = await rotatedStream(18);
        const filesBefore = streamFiles(dir).length;
        const again = openLog(dir, SMALL);
        await recordEach(again, 3);
        await again.close();
        const more = openLog(dir, SMALL);
        await recordEach(more, 3);
        await more.close();
        expect(streamFiles(dir).length).toBeGreaterThan(filesBefore);
        expect(allLines(dir).map((l) => l.seq)).toEqual(seqs(1, 24));
        expect(verifyDirectory(dir).every((r) => r.verdict.ok && !r.verdict.resumedFrom)).toBe(true);
    });

    // Each state a kill can leave during a rotation (runtime/audit.ts AuditLog.rotate), made by hand from a live file
    // of six lines; a restart must lose none of them and continue the chain so that it verifies.
    it.each<[string, (live: string, dir: string) => Promise<void> | void, unknown[]]>([
        ["killed before the rename: the live file full", () => undefined, []],
        ["killed after the rename, before the new live file was made", (live, dir) => renameSync(live, segmentFile(dir, 1)), []],
        ["killed after the new live file was made, before a line was written", (live, dir) => (renameSync(live, segmentFile(dir, 1)), writeFileSync(live, "")), []],
        [
            "killed while the new live file's first line was written",
            (live, dir) => (renameSync(live, segmentFile(dir, 1)), writeFileSync(live, '{"seq":7,"ts":"2026-')),
            [{ kind: "torn_tail", bytes: 20, savedAs: expect.stringMatching(/ingress\.audit\.jsonl\.torn-\d+$/) }],
        ],
        [
            "killed after the new live file's first line was written",
            async (live, dir) => {
                renameSync(live, segmentFile(dir, 1));
                const log = openLog(dir);
                await recordEach(log, 1);
                await log.close();
            },
            [],
        ],
    ])("a restart after a rotation %s loses nothing and verifies", async (_, crash, reported) => {
        const { dir, live, text, rotation } = await fullLiveFile(6);
        await crash(live, dir);
        const before = allLines(dir).length;
        const again = openLog(dir, rotation);
        expect(problems).toEqual(reported);
        await recordEach(again, 2);
        await again.close();
        expect(readFileSync(segmentFile(dir, 1), "utf8")).toBe(text);
        expect(allLines(dir).map((l) => l.seq)).toEqual(seqs(1, before + 2));
        expect(verifyDirectory(dir).map((r) => r.verdict)).toEqual(streamFiles(dir).map(() => expect.objectContaining({ ok: true })));
        expect(verifyDirectory(dir).some((r) => r.verdict.ok && r.verdict.resumedFrom)).toBe(false);
    });

    it("writes the group to the live file when the rename fails, reports it, and rotates with the next group", async () => {
        const { dir, rotation } = await fullLiveFile(4);
        const log = openLog(dir, rotation);
        vi.spyOn(auditIo, "rename").mockRejectedValueOnce(new Error("EIO: simulated"));
        await recordEach(log, 1);
        expect(problems).toEqual([{ kind: "rotate_failed", error: "EIO: simulated" }]);
        expect(streamFiles(dir)).toEqual([log.file]);
        expect(log.failing).toBe(false);
        await recordEach(log, 1);
        expect(fileLines(segmentFile(dir, 1)).map((l) => l.seq)).toEqual(seqs(1, 5));
        expect(fileLines(log.file).map((l) => l.seq)).toEqual([6]);
        expect(verifyDirectory(dir).every((r) => r.verdict.ok)).toBe(true);
    });

    it("writes the group to the segment when syncing the directory fails after the rename, and only opens a live file next time", async () => {
        const { dir, rotation } = await fullLiveFile(4);
        const log = openLog(dir, rotation);
        const renames = vi.spyOn(auditIo, "rename");
        vi.spyOn(auditIo, "syncDirectory").mockRejectedValueOnce(new Error("EIO: simulated"));
        await recordEach(log, 1);
        expect(problems).toEqual([{ kind: "rotate_failed", error: "EIO: simulated" }]);
        expect(fileLines(segmentFile(dir, 1)).map((l) => l.seq)).toEqual(seqs(1, 5));
        await recordEach(log, 1);
        expect(renames).toHaveBeenCalledTimes(1);
        expect(fileLines(log.file).map((l) => l.seq)).toEqual([6]);
        expect(verifyDirectory(dir).every((r) => r.verdict.ok)).toBe(true);
    });

    it("never replaces a segment already there: the rotation fails, reported, and the group goes to the live file", async () => {
        const { dir, live, rotation } = await fullLiveFile(4);
        writeFileSync(segmentFile(dir, 1), "kept as it is\n");
        const log = openLog(dir, rotation);
        await recordEach(log, 1);
        expect(problems).toEqual([{ kind: "rotate_failed", error: expect.stringMatching(/already exists$/) }]);
        expect(readFileSync(segmentFile(dir, 1), "utf8")).toBe("kept as it is\n");
        expect(verifyChain(readFileSync(live, "utf8"))).toMatchObject({ ok: true, lines: 5 });
    });

    it("refuses to start on a newest segment that no rotation leaves (empty) when the live file is empty", async () => {
        const dir = await rotatedStream(22);
        const live = path.join(dir, "ingress.audit.jsonl");
        renameSync(live, segmentFile(dir, fileLines(live)[0].seq));
        writeFileSync(segmentFile(dir, 23), "");
        expect(() => openLog(dir, SMALL)).toThrow(/is empty or ends in an incomplete line/);
    });

    it("writes nothing refused into any segment", async () => {
        const dir = tempDir("audit");
        const log = openLog(dir, SMALL);
        for (let i = 0; i < 12; i++) {
            for (const [, event, error] of REFUSED) expect(() => log.record(event as never)).toThrow(error);
            await recordEach(log, 1);
        }
        await log.close();
        const names = readdirSync(dir);
        expect(names.length).toBeGreaterThanOrEqual(3);
        for (const name of names) {
            const text = readFileSync(path.join(dir, name), "utf8");
            expect(text).not.toContain(TOKEN);
            expect(text).not.toContain("ignore all previous");
        }
    });

    it("tail reads across segment boundaries, and stops reading files once it has enough", async () => {
        const dir = await rotatedStream(22);
        expect(tailCommand(dir, { count: 6 }).map((l) => l.seq)).toEqual(seqs(17, 22));
        expect(tailCommand(dir, { agent: "lisa", count: 4 }).map((l) => l.seq)).toEqual([16, 18, 20, 22]);
        expect(tailCommand(dir, { count: 100 }).map((l) => l.seq)).toEqual(seqs(1, 22));
        unlinkSync(streamFiles(dir)[0]);
        expect(tailCommand(dir, { count: 6 }).map((l) => l.seq)).toEqual(seqs(17, 22));
    });
});
