// The skill scanner: a corpus of malicious skills (each must raise its rule) and benign ones (each must be clean),
// the aliasing and folding forms one by one, the allowlist check, the quarantine database and the CLI.
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { allowlisted, analyzeSource } from "../scanner/analyze";
import { ACKNOWLEDGMENT, Quarantine, quarantineAuditDir, quarantinePath } from "../scanner/quarantine";
import { auditIo, readAuditLines, shortDigest, verifyDirectory } from "../runtime/audit";
import { RULES, type RuleId } from "../scanner/rules";
import { scanSkill, skillHash } from "../scanner/skill";
import { REPO_ROOT } from "./support/mockStack";

const FIXTURES = path.join(REPO_ROOT, "test", "fixtures", "skills");
/** The allowlist the corpus is written against. */
const CONTEXT = { allow: [{ host: "api.open-meteo.com", ports: [443] }, { host: "*.githubusercontent.com", ports: [443] }] };
const EXPECTED: Record<string, RuleId> = JSON.parse(readFileSync(path.join(FIXTURES, "malicious.json"), "utf8"));
const malicious = readdirSync(path.join(FIXTURES, "malicious")).sort();
const benign = readdirSync(path.join(FIXTURES, "benign")).sort();

const tempDirs: string[] = [];
function tempDir(prefix: string): string {
    const dir = mkdtempSync(path.join(tmpdir(), prefix));
    tempDirs.push(dir);
    return dir;
}
afterEach(() => {
    for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe("the fixture corpus", () => {
    it("has at least 40 malicious and 20 benign skills, and a malicious one for every rule", () => {
        expect(malicious.length).toBeGreaterThanOrEqual(40);
        expect(benign.length).toBeGreaterThanOrEqual(20);
        expect(malicious.sort()).toEqual(Object.keys(EXPECTED).sort());
        expect(new Set(Object.values(EXPECTED))).toEqual(new Set(RULES.keys()));
    });

    it.each(malicious)("flags malicious/%s", (name) => {
        const { findings } = scanSkill(path.join(FIXTURES, "malicious", name), CONTEXT);
        expect(findings.map((f) => f.rule)).toContain(EXPECTED[name]);
        for (const f of findings) expect(f).toMatchObject({ severity: RULES.get(f.rule)!.severity, line: expect.any(Number) });
    });

    it.each(benign)("passes benign/%s", (name) => {
        expect(scanSkill(path.join(FIXTURES, "benign", name), CONTEXT).findings).toEqual([]);
    });
});

describe("aliasing and constant folding", () => {
    const rulesOf = (code: string, file = "index.js") => analyzeSource(file, code, CONTEXT).map((f) => f.rule);
    it.each<[string, string, RuleId]>([
        ["an alias of eval", "const e = eval; e(x);", "exec-eval"],
        ["an alias of an alias", "const a = eval; const b = a; b(x);", "exec-eval"],
        ["a reassigned name", "let e = 1; e = eval; e(x);", "exec-eval"],
        ["eval reached through a concatenated global key", 'globalThis["ev" + "al"](x);', "exec-eval"],
        ["eval through self and a template key", "self[`ev${'al'}`](x);", "exec-eval"],
        ["eval bound", "const e = eval.bind(null); e(x);", "exec-eval"],
        ["eval destructured from globalThis", "const { eval: run } = globalThis; run(x);", "exec-eval"],
        ["require of a concatenated name", 'require("child_" + "process");', "child-process"],
        ["require of a joined array", 'require(["child", "process"].join("_"));', "child-process"],
        ["require of char codes", "require(String.fromCharCode(118, 109));", "exec-vm"],
        ["require of a concat call", 'require("child_".concat("process"));', "child-process"],
        ["require through an alias", 'const r = require; r("child_process");', "child-process"],
        ["require through module.require", 'module.require("child_process");', "child-process"],
        ["require through process.mainModule", 'process.mainModule.require("child_process");', "child-process"],
        ["a dynamic import of a folded name", 'await import("node:" + "vm");', "exec-vm"],
        ["a member of the module assembled", 'const cp = require("fs"); cp["rm" + "Sync"]("x");', "obfuscation-built-name"],
        ["the module assembled", 'require("f" + "s");', "obfuscation-built-name"],
        ["a TypeScript cast in the way", "(eval as any)(x);", "exec-eval"],
        ["fetch called through .call", 'fetch.call(null, "https://evil.example/");', "network-unlisted-destination"],
        ["a url held in a const", 'const u = "https://evil.example/x"; fetch(u);', "network-unlisted-destination"],
    ])("%s", (_name, code, rule) => {
        expect(rulesOf(code, code.includes(" as any") ? "index.ts" : "index.mjs")).toContain(rule);
    });

    it("indexes data tables of modules freely, but not a built-in module's API", () => {
        expect(rulesOf('import http from "node:http"; export const text = (code) => http.STATUS_CODES[code];')).toEqual([]);
        expect(rulesOf('import { table } from "./data.js"; export const get = (k) => table[k];')).toEqual([]);
        expect(rulesOf('import fs from "node:fs"; export const op = (name) => fs.promises[name]("x");')).toContain("obfuscation-built-name");
    });

    it("resolves long chains of names without blowing up", () => {
        // Each name refers to the previous one twice: unmemoised resolution took 2^depth steps (hours on zod).
        const chain = Array.from({ length: 40 }, (_, i) => (i === 0 ? "let a0 = input;" : `let a${i} = a${i - 1} || a${i - 1};`)).join("\n");
        expect(rulesOf(`${chain}\nfetch(a39);`)).toEqual(["network-dynamic-destination"]);
    });

    it("names the file, line and excerpt of a finding", () => {
        const [found] = analyzeSource("lib/run.js", "// header\n\nconst e = eval;\nmodule.exports = (c) => e(c);\n", CONTEXT);
        expect(found).toEqual({
            rule: "exec-eval",
            severity: "critical",
            file: "lib/run.js",
            line: 4,
            excerpt: "module.exports = (c) => e(c);",
            message: "eval runs a string as code",
        });
    });
});

describe("literal destinations against the allowlist", () => {
    const allow = [{ host: "api.example.com", ports: [443] }, { host: "*.example.org", ports: [443, 8443] }];
    it.each([
        ["https://api.example.com/v1", true],
        ["https://API.Example.COM./v1", true],
        ["wss://api.example.com/socket", true],
        ["https://a.example.org:8443/", true],
        ["http://api.example.com/v1", false],
        ["https://api.example.com:444/", false],
        ["https://example.org/", false],
        ["https://api.example.com.evil.test/", false],
        ["https://93.184.216.34/", false],
        ["/relative/path", false],
        ["file:///etc/passwd", false],
    ])("%s -> allowed %s", (url, allowed) => {
        expect(allowlisted(url, allow) === true).toBe(allowed);
    });
});

describe("the content hash", () => {
    it("changes with any byte, any rename, any new file", () => {
        const base = [{ path: "index.js", content: Buffer.from("a") }];
        const hash = skillHash(base);
        expect(skillHash([{ path: "index.js", content: Buffer.from("b") }])).not.toBe(hash);
        expect(skillHash([{ path: "main.js", content: Buffer.from("a") }])).not.toBe(hash);
        expect(skillHash([...base, { path: "x.md", content: Buffer.alloc(0) }])).not.toBe(hash);
        expect(skillHash([{ path: "index.js", content: Buffer.from("a") }])).toBe(hash);
    });
});

describe("the quarantine", () => {
    // Two versions' content hashes (sha256 hex, as skillHash gives them).
    const H1 = "1".repeat(64);
    const H2 = "2".repeat(64);
    const finding = analyzeSource("index.js", "eval(x);", CONTEXT)[0];
    const open = () => new Quarantine(path.join(tempDir("quarantine-"), "dev.sqlite"), () => new Date("2026-01-02T03:04:05Z"));

    it("keeps a skill with findings quarantined until an admin overrides that exact version", async () => {
        const q = open();
        try {
            expect(q.record({ name: "s", hash: H1, findings: [finding] }).status).toBe("quarantined");
            await expect(q.override("s", { acknowledgment: "yes", user: "ann" })).rejects.toThrow(/exactly "I accept the risk"/);
            await expect(q.override("s", { acknowledgment: ACKNOWLEDGMENT, user: "" })).rejects.toThrow(/--user/);
            await expect(q.override("other", { acknowledgment: ACKNOWLEDGMENT, user: "ann" })).rejects.toThrow(/no quarantined version/);
            const overridden = await q.override("s", { acknowledgment: ACKNOWLEDGMENT, user: "ann" });
            expect(overridden).toMatchObject({ status: "overridden", hash: H1, override: { user: "ann", acknowledgment: ACKNOWLEDGMENT, at: "2026-01-02T03:04:05.000Z" } });
            expect(q.record({ name: "s", hash: H1, findings: [finding] }).status).toBe("overridden");
            // Another version of the same skill is not covered.
            expect(q.record({ name: "s", hash: H2, findings: [finding] }).status).toBe("quarantined");
            // A finding the admin did not see (rules updated) quarantines the overridden version again.
            const extra = { ...finding, line: 9 };
            expect(q.record({ name: "s", hash: H1, findings: [finding, extra] }).status).toBe("quarantined");
            expect(q.list().map((r) => [r.hash, r.status])).toEqual(expect.arrayContaining([[H1, "quarantined"], [H2, "quarantined"]]));
        } finally {
            q.close();
        }
    });

    it.each([
        ["an identifier", "ann", { user: "ann" }],
        ["free text, written as its digest", "Ann Smith <ann@example.test>", { userSha256: shortDigest("Ann Smith <ann@example.test>") }],
    ])("writes each override, by %s, as one chained line of the stack's audit stream beside the database", async (_case, user, written) => {
        const q = open();
        try {
            q.record({ name: "s", hash: "ab".repeat(32), findings: [finding] });
            await expect(q.override("s", { acknowledgment: "yes", user })).rejects.toThrow();
            await q.override("s", { acknowledgment: ACKNOWLEDGMENT, user });
            const [verdict] = verifyDirectory(quarantineAuditDir(q.file));
            expect(verdict).toMatchObject({ file: path.join(path.dirname(q.file), "dev-audit", "skill-gate.audit.jsonl"), verdict: { ok: true, lines: 1 } });
            const text = readFileSync(verdict.file, "utf8");
            const [line] = readAuditLines(text);
            const fields = { skill: "s", version: "abababababababab", ...written, findings: 1 };
            expect(line).toMatchObject({ service: "skill-gate", type: "skill_overridden", ts: "2026-01-02T03:04:05.000Z", ...fields });
            expect(Object.keys(line).sort()).toEqual(["seq", "ts", "service", "type", "prev", "hash", ...Object.keys(fields)].sort());
            expect(text).not.toContain(ACKNOWLEDGMENT);
        } finally {
            q.close();
        }
    });

    it("changes nothing when the override cannot be audited", async () => {
        const q = open();
        const fdatasync = auditIo.fdatasync;
        auditIo.fdatasync = () => Promise.reject(new Error("ENOSPC: no space left on device"));
        try {
            q.record({ name: "s", hash: H1, findings: [finding] });
            await expect(q.override("s", { acknowledgment: ACKNOWLEDGMENT, user: "ann" })).rejects.toThrow(/could not be written to the audit stream .*ENOSPC.*nothing was changed/);
            expect(q.get("s", H1)?.status).toBe("quarantined");
        } finally {
            auditIo.fdatasync = fdatasync;
            q.close();
        }
    });

    it("records clean skills as clean", async () => {
        const q = open();
        try {
            expect(q.record({ name: "s", hash: "h", findings: [] }).status).toBe("clean");
            await expect(q.override("s", { acknowledgment: ACKNOWLEDGMENT, user: "ann" })).rejects.toThrow(/no quarantined version/);
        } finally {
            q.close();
        }
    });

    it("lives under the repository per stack unless OPENCLAW_QUARANTINE_DIR says otherwise", () => {
        expect(quarantinePath("prod", {})).toBe(path.join(REPO_ROOT, ".openclaw-quarantine", "prod.sqlite"));
        expect(quarantinePath("prod", { OPENCLAW_QUARANTINE_DIR: "/var/q" })).toBe("/var/q/prod.sqlite");
    });
});

describe("npm run scan", () => {
    const scan = (...args: string[]) => {
        const result = spawnSync(path.join(REPO_ROOT, "node_modules", ".bin", "tsx"), [path.join(REPO_ROOT, "scanner", "cli.ts"), ...args], { encoding: "utf8", timeout: 60_000 });
        return { code: result.status, stdout: result.stdout, stderr: result.stderr };
    };

    it("exits 0 on clean skills and 1 with each finding named", () => {
        expect(scan(path.join(FIXTURES, "benign", "string-utils")).code).toBe(0);
        const { code, stdout } = scan(path.join(FIXTURES, "benign", "weather-fetch"), path.join(FIXTURES, "malicious", "eval-alias"));
        expect(code).toBe(1);
        expect(stdout).toContain("weather-fetch");
        expect(stdout).toMatch(/eval-alias .*1 finding/);
        expect(stdout).toContain("index.js:3  critical  exec-eval  eval runs a string as code");
    });

    it("checks literal destinations against --allow, and prints JSON", () => {
        const dir = path.join(FIXTURES, "benign", "weather-fetch");
        expect(scan(dir).code).toBe(1);
        const { code, stdout } = scan(dir, "--allow", "api.open-meteo.com", "--json");
        expect(code).toBe(0);
        expect(JSON.parse(stdout)).toEqual([expect.objectContaining({ name: "weather-fetch", findings: [] })]);
    });

    it("lists, shows and overrides quarantined skills", () => {
        const db = path.join(tempDir("quarantine-cli-"), "q.sqlite");
        const q = new Quarantine(db);
        q.record({ name: "eval-alias", hash: "ab".repeat(32), findings: analyzeSource("index.js", "eval(x)", CONTEXT) });
        q.close();
        expect(scan("quarantine", "list", "--db", db).stdout).toMatch(/eval-alias {2}abababababababab {2}quarantined {2}1 finding/);
        expect(scan("quarantine", "show", "eval-alias", "--db", db).stdout).toContain("exec-eval");
        const refused = scan("quarantine", "override", "eval-alias", "--db", db, "--ack", "ok", "--user", "ann");
        expect(refused.code).toBe(1);
        expect(refused.stderr).toContain('the acknowledgment must be exactly "I accept the risk"');
        const done = scan("quarantine", "override", "eval-alias", "--db", db, "--ack", ACKNOWLEDGMENT, "--user", "ann");
        expect(done.code).toBe(0);
        expect(done.stdout).toMatch(/overridden: eval-alias a{1}b.* \(1 finding\(s\) acknowledged\)\n {2}overridden by ann at .*: "I accept the risk"/);
    });

    it("refuses to follow a link out of a skill", () => {
        const dir = tempDir("skill-");
        cpSync(path.join(FIXTURES, "benign", "string-utils"), dir, { recursive: true });
        writeFileSync(path.join(dir, "notes.sh"), "echo hi\n");
        const { code, stdout } = scan(dir);
        expect(code).toBe(1);
        expect(stdout).toContain("notes.sh:1  high  unscannable-file  .sh files are not analysed");
    });
});
