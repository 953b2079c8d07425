// The quarantine: every skill version the gate has seen (name, content hash, findings, status) in an embedded SQLite
// database (node:sqlite), and the log of overrides. An override binds to one content hash and to the findings that
// were acknowledged: an edited skill, or a new finding from updated rules, is quarantined again.
import { mkdirSync } from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { z } from "zod";
import { AuditLog, auditField, auditName } from "../runtime/audit";
import { type Finding, RULES_VERSION } from "./rules";

export type SkillStatus = "clean" | "quarantined" | "overridden";

export interface SkillRecord {
    name: string;
    hash: string;
    status: SkillStatus;
    findings: Finding[];
    rulesVersion: number;
    firstSeen: string;
    lastScanned: string;
    override?: OverrideRecord;
}

export interface OverrideRecord {
    user: string;
    acknowledgment: string;
    at: string;
}

/** The words an admin must type to let a quarantined skill through. */
export const ACKNOWLEDGMENT = "I accept the risk";

/** Where a stack's quarantine lives: `.openclaw-quarantine/<stack>.sqlite` in the repository, or under $OPENCLAW_QUARANTINE_DIR. */
export function quarantinePath(stack: string, env: NodeJS.ProcessEnv = process.env): string {
    const dir = env.OPENCLAW_QUARANTINE_DIR ? path.resolve(env.OPENCLAW_QUARANTINE_DIR) : path.resolve(__dirname, "..", ".openclaw-quarantine");
    return path.join(dir, `${stack}.sqlite`);
}

/** Where a stack's override audit stream lives: beside its database, `<stack>-audit/skill-gate.audit.jsonl`. */
export function quarantineAuditDir(quarantineFile: string): string {
    return path.join(path.dirname(quarantineFile), `${path.basename(quarantineFile, ".sqlite")}-audit`);
}

/**
 * The skill gate's audit events (runtime/audit.ts): one per override. `version`: the first 16 hex digits of the
 * version's sha256; `skill` and `user` as given when they are identifiers, else only their digests (`...Sha256`);
 * `findings`: how many the admin acknowledged.
 */
export const SKILL_GATE_AUDIT_EVENTS = {
    skill_overridden: z.object({
        skill: auditField.name.optional(),
        skillSha256: auditField.digest.optional(),
        version: auditField.digest,
        user: auditField.name.optional(),
        userSha256: auditField.digest.optional(),
        findings: auditField.count,
    }),
};

const SCHEMA = `
CREATE TABLE IF NOT EXISTS skills (
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('clean', 'quarantined', 'overridden')),
    findings TEXT NOT NULL,
    rules_version INTEGER NOT NULL,
    first_seen TEXT NOT NULL,
    last_scanned TEXT NOT NULL,
    PRIMARY KEY (name, hash)
);
CREATE TABLE IF NOT EXISTS overrides (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    user TEXT NOT NULL,
    acknowledgment TEXT NOT NULL,
    at TEXT NOT NULL,
    acknowledged_findings TEXT NOT NULL
);`;

/** A finding's identity for acknowledgment: which rule, where. */
const findingKey = (f: Finding) => `${f.rule}\0${f.file}\0${f.line}`;

interface SkillRow {
    name: string;
    hash: string;
    status: SkillStatus;
    findings: string;
    rules_version: number;
    first_seen: string;
    last_scanned: string;
}

interface OverrideRow {
    user: string;
    acknowledgment: string;
    at: string;
    acknowledged_findings: string;
}

export class Quarantine {
    private readonly db: DatabaseSync;

    constructor(
        readonly file: string,
        private readonly now: () => Date = () => new Date(),
        private readonly auditDir = quarantineAuditDir(file),
    ) {
        if (file !== ":memory:") mkdirSync(path.dirname(file), { recursive: true });
        this.db = new DatabaseSync(file);
        this.db.exec("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;");
        this.db.exec(SCHEMA);
    }

    /**
     * Records a scan and returns the skill's standing. Clean when there is no finding; overridden only when an
     * override exists for this exact hash and acknowledged every current finding; quarantined otherwise.
     */
    record(scan: { name: string; hash: string; findings: Finding[] }): SkillRecord {
        const at = this.now().toISOString();
        const override = this.latestOverride(scan.name, scan.hash);
        let status: SkillStatus = "quarantined";
        if (scan.findings.length === 0) status = "clean";
        else if (override) {
            const acknowledged = new Set((JSON.parse(override.acknowledged_findings) as Finding[]).map(findingKey));
            if (scan.findings.every((f) => acknowledged.has(findingKey(f)))) status = "overridden";
        }
        this.db
            .prepare(
                `INSERT INTO skills (name, hash, status, findings, rules_version, first_seen, last_scanned) VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (name, hash) DO UPDATE SET status = excluded.status, findings = excluded.findings, rules_version = excluded.rules_version, last_scanned = excluded.last_scanned`,
            )
            .run(scan.name, scan.hash, status, JSON.stringify(scan.findings), RULES_VERSION, at, at);
        return this.get(scan.name, scan.hash)!;
    }

    get(name: string, hash: string): SkillRecord | undefined {
        const row = this.db.prepare("SELECT * FROM skills WHERE name = ? AND hash = ?").get(name, hash) as SkillRow | undefined;
        return row && this.toRecord(row);
    }

    list(): SkillRecord[] {
        return (this.db.prepare("SELECT * FROM skills ORDER BY name, last_scanned DESC").all() as unknown as SkillRow[]).map((row) => this.toRecord(row));
    }

    /** Every version of one skill, newest scan first. */
    versions(name: string): SkillRecord[] {
        return (this.db.prepare("SELECT * FROM skills WHERE name = ? ORDER BY last_scanned DESC, rowid DESC").all(name) as unknown as SkillRow[]).map((row) => this.toRecord(row));
    }

    /**
     * Lets one quarantined version through: the newest quarantined one, or the one whose hash starts with `hash`.
     * Refuses without the exact acknowledgment and a user name. The override is written to the audit stream first
     * (nothing changes if that fails), then appended to the log.
     */
    async override(name: string, input: { acknowledgment: string; user: string; hash?: string }): Promise<SkillRecord> {
        if (input.acknowledgment !== ACKNOWLEDGMENT) throw new Error(`the acknowledgment must be exactly "${ACKNOWLEDGMENT}"`);
        if (!/^\S(?:.{0,62}\S)?$/.test(input.user)) throw new Error("give the name of the admin who accepts the risk (--user)");
        const candidates = this.versions(name).filter((r) => r.status === "quarantined" && (input.hash === undefined || r.hash.startsWith(input.hash)));
        if (candidates.length === 0) throw new Error(`no quarantined version of skill '${name}'${input.hash ? ` with hash ${input.hash}…` : ""}`);
        if (input.hash !== undefined && candidates.length > 1) throw new Error(`hash ${input.hash}… matches ${candidates.length} versions; give more of it`);
        const target = candidates[0];
        await this.auditOverride(name, target, input.user);
        const at = this.now().toISOString();
        this.db
            .prepare("INSERT INTO overrides (name, hash, user, acknowledgment, at, acknowledged_findings) VALUES (?, ?, ?, ?, ?, ?)")
            .run(name, target.hash, input.user, input.acknowledgment, at, JSON.stringify(target.findings));
        this.db.prepare("UPDATE skills SET status = 'overridden' WHERE name = ? AND hash = ?").run(name, target.hash);
        return this.get(name, target.hash)!;
    }

    close(): void {
        this.db.close();
    }

    private async auditOverride(name: string, target: SkillRecord, user: string): Promise<void> {
        let failure: string | undefined;
        const audit = new AuditLog({
            dir: this.auditDir,
            service: "skill-gate",
            events: SKILL_GATE_AUDIT_EVENTS,
            now: this.now,
            onProblem: (problem) => {
                if (problem.kind === "write_failed") failure = problem.error;
            },
        });
        try {
            void audit.record({ type: "skill_overridden", ...auditName("skill", name), version: target.hash.slice(0, 16), ...auditName("user", user), findings: target.findings.length });
        } finally {
            await audit.close();
        }
        if (failure !== undefined) throw new Error(`the override could not be written to the audit stream in ${this.auditDir} (${failure}); nothing was changed`);
    }

    private latestOverride(name: string, hash: string): OverrideRow | undefined {
        return this.db.prepare("SELECT user, acknowledgment, at, acknowledged_findings FROM overrides WHERE name = ? AND hash = ? ORDER BY id DESC LIMIT 1").get(name, hash) as OverrideRow | undefined;
    }

    private toRecord(row: SkillRow): SkillRecord {
        const override = row.status === "overridden" ? this.latestOverride(row.name, row.hash) : undefined;
        return {
            name: row.name,
            hash: row.hash,
            status: row.status,
            findings: JSON.parse(row.findings),
            rulesVersion: row.rules_version,
            firstSeen: row.first_seen,
            lastScanned: row.last_scanned,
            ...(override && { override: { user: override.user, acknowledgment: override.acknowledgment, at: override.at } }),
        };
    }
}
