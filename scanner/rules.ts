// The rules, from the versioned rules file: every finding names one of these ids, and its severity comes from here.
import rulesFile from "./rules.json";

export type Severity = "critical" | "high" | "medium";

export type RuleId =
    | "exec-eval"
    | "exec-function-constructor"
    | "exec-vm"
    | "exec-dynamic-import"
    | "child-process"
    | "network-unlisted-destination"
    | "network-dynamic-destination"
    | "fs-write-outside-workspace"
    | "fs-delete"
    | "credential-env-enumeration"
    | "credential-path"
    | "obfuscation-encoded-payload"
    | "obfuscation-built-name"
    | "install-script"
    | "skillmd-secret-request"
    | "skillmd-exfiltration"
    | "unscannable-file";

export interface Rule {
    id: RuleId;
    severity: Severity;
    description: string;
}

export const RULES_VERSION: number = rulesFile.version;
export const RULES: ReadonlyMap<RuleId, Rule> = new Map((rulesFile.rules as Rule[]).map((rule) => [rule.id, rule]));

export interface Finding {
    rule: RuleId;
    severity: Severity;
    /** Path inside the skill, with forward slashes. */
    file: string;
    line: number;
    /** The source line, trimmed and cut to a readable length. */
    excerpt: string;
    /** What was seen, in a few words. */
    message: string;
}

const EXCERPT_CHARS = 120;

export function excerptOf(lines: readonly string[], line: number): string {
    const text = (lines[line - 1] ?? "").trim();
    return text.length > EXCERPT_CHARS ? `${text.slice(0, EXCERPT_CHARS - 1)}…` : text;
}

/** Builds a finding of a rule the rules file declares (a typo in a rule id fails loudly, never silently). */
export function finding(rule: RuleId, file: string, line: number, excerpt: string, message: string): Finding {
    const declared = RULES.get(rule);
    if (!declared) throw new Error(`rule ${rule} is not in scanner/rules.json`);
    return { rule, severity: declared.severity, file, line, excerpt, message };
}

/** One line per finding, the excerpt under it. */
export function formatFindings(findings: readonly Finding[], indent = "  "): string[] {
    return findings.map((f) => `${indent}${f.file}:${f.line}  ${f.severity}  ${f.rule}  ${f.message}${f.excerpt ? `\n${indent}    ${f.excerpt}` : ""}`);
}
