// The audit trail (runtime/audit.ts): the hash chain and its verifier, resuming after a restart or a crash, group
// fsync, and that nothing undeclared (a token, a message) can be written into it.
import { appendFileSync, closeSync, openSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import { type AuditEvents, AuditLog, auditField, auditIo, encodeAuditLine, readAuditLines, shortDigest, verifyChain } from "../runtime/audit";
import { tailCommand, verifyCommand } from "../scripts/audit.mts";
import { tempDir } from "./support/tempDirs";

const EVENTS = {
    auth_failed: z.object({ reason: auditField.name }),
    rule_hit: z.object({ user: auditField.name, agent: auditField.name, rule: auditField.name, textSha256: auditField.digest }),
} satisfies AuditEvents;

const TOKEN = "igt_Zk3QvX9pLm2RtY7wB4nC8dF1gH6jK0sA5eU";

const problems: unknown[] = [];
const open: AuditLog<typeof EVENTS>[] = [];
function openLog(dir: string) {
    const log = new AuditLog({ dir, service: "ingress", events: EVENTS, onProblem: (problem) => problems.push(problem) });
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

describe("the chain", () => {
    it("verifies a stream as written, one seq after another, each line's prev the hash before", async () => {
        const { file } = await writeStream();
        const verdict = verifyChain(readFileSync(file, "utf8"));
        expect(verdict).toMatchObject({ ok: true, lines: 6 });
        const lines = readAuditLines(readFileSync(file, "utf8"));
        expect(lines.map((l) => l.seq)).toEqual([1, 2, 3, 4, 5, 6]);
        for (let i = 1; i < lines.length; i++) expect(lines[i].prev).toBe(lines[i - 1].hash);
    });

    const rehash = (line: string, change: (body: Record<string, unknown>) => void) => {
        const { hash: _hash, ...body } = JSON.parse(line) as Record<string, unknown>;
        change(body);
        return encodeAuditLine(body as Parameters<typeof encodeAuditLine>[0]).line;
    };

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

describe("nothing secret gets in", () => {
    it.each<[string, Record<string, unknown>, RegExp]>([
        ["an undeclared field carrying a token", { type: "auth_failed", reason: "bad_token", token: TOKEN }, /Unrecognized key/],
        ["a token in a declared name field", { type: "auth_failed", reason: TOKEN }, /Invalid string/],
        ["message text in a declared field", { type: "rule_hit", user: "ann", agent: "bart", rule: "r", textSha256: "ignore all previous instructions" }, /Invalid string/],
        ["an undeclared event type", { type: "request", authorization: `Bearer ${TOKEN}` }, /undeclared event type 'request'/],
    ])("refuses %s", async (_, event, error) => {
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
