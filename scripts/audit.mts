// Reads the audit trails (runtime/audit.ts), copied into one directory (where each lives: docs/audit.md), e.g.
//   docker cp openclaw-dev-egress-gateway:/var/lib/egress/audit/. ./audit
//   npm run audit -- verify ./audit                     every chain; exit 1 naming the first broken line
//   npm run audit -- tail [./audit] [--agent bart] [--service ingress] [-n 20]
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { AUDIT_FILE, type AuditLine, readAuditLines, verifyDirectory } from "../runtime/audit.ts";

export function verifyCommand(dir: string, print: (line: string) => void): number {
    const results = verifyDirectory(dir);
    if (results.length === 0) {
        print(`no audit streams (*.audit.jsonl) in ${dir}`);
        return 1;
    }
    let broken = 0;
    for (const { file, verdict } of results) {
        if (verdict.ok) print(`ok      ${file}: ${verdict.lines} lines, chain intact`);
        else {
            broken += 1;
            print(`BROKEN  ${file}:${verdict.line}: ${verdict.problem}`);
        }
    }
    return broken === 0 ? 0 : 1;
}

export function tailCommand(dir: string, filter: { agent?: string; service?: string; count: number }): AuditLine[] {
    const lines = readdirSync(dir)
        .filter((name) => AUDIT_FILE.test(name) && (filter.service === undefined || AUDIT_FILE.exec(name)![1] === filter.service))
        .flatMap((name) => readAuditLines(readFileSync(path.join(dir, name), "utf8")))
        .filter((line) => filter.agent === undefined || line.agent === filter.agent)
        .sort((a, b) => a.ts.localeCompare(b.ts));
    return lines.slice(Math.max(0, lines.length - filter.count));
}

if (import.meta.main) {
    const { positionals, values } = parseArgs({
        args: process.argv.slice(2),
        allowPositionals: true,
        options: { agent: { type: "string" }, service: { type: "string" }, n: { type: "string", short: "n", default: "50" } },
    });
    const [command, dir = "."] = positionals;
    if (command === "verify") process.exit(verifyCommand(dir, (line) => console.log(line)));
    else if (command === "tail") {
        for (const line of tailCommand(dir, { agent: values.agent, service: values.service, count: Number(values.n) })) console.log(JSON.stringify(line));
    } else {
        console.error("usage: npm run audit -- verify <dir> | tail [<dir>] [--agent NAME] [--service NAME] [-n N]");
        process.exit(2);
    }
}
