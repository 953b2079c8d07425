// Reads the audit trails (runtime/audit.ts), copied into one directory (where each lives: docs/audit.md), e.g.
//   docker cp openclaw-dev-egress-gateway:/var/lib/egress/audit/. ./audit
//   npm run audit -- verify ./audit                     every chain, across segments; exit 1 naming the first broken line
//   npm run audit -- tail [./audit] [--agent bart] [--service ingress] [-n 20]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { type AuditLine, auditStreams, readAuditLines, verifyDirectory } from "../runtime/audit.ts";

export function verifyCommand(dir: string, print: (line: string) => void): number {
    const results = verifyDirectory(dir);
    if (results.length === 0) {
        print(`no audit streams (*.audit.jsonl) in ${dir}`);
        return 1;
    }
    let broken = 0;
    for (const [index, { service, file, verdict }] of results.entries()) {
        if (!verdict.ok) {
            broken += 1;
            print(`BROKEN  ${file}:${verdict.line}: ${verdict.problem}`);
        } else if (verdict.resumedFrom) {
            const { seq, hash } = verdict.resumedFrom;
            const why = index === 0 || results[index - 1].service !== service ? "in no file here: older segments deleted" : "checked on its own after the break above";
            print(`ok      ${file}: ${verdict.lines} lines, chain intact, resumed from ${hash} (seq ${seq}, ${why})`);
        } else print(`ok      ${file}: ${verdict.lines} lines, chain intact`);
    }
    return broken === 0 ? 0 : 1;
}

/** The last `count` lines of the streams (filtered), merged by time: each stream read from its newest file back. */
export function tailCommand(dir: string, filter: { agent?: string; service?: string; count: number }): AuditLine[] {
    const lines = [...auditStreams(dir)]
        .filter(([service]) => filter.service === undefined || service === filter.service)
        .flatMap(([, files]) => {
            const newestFirst: AuditLine[][] = [];
            let taken = 0;
            for (const { file } of files.toReversed()) {
                if (taken >= filter.count) break;
                const matching = readAuditLines(readFileSync(file, "utf8")).filter((line) => filter.agent === undefined || line.agent === filter.agent);
                newestFirst.push(matching);
                taken += matching.length;
            }
            return newestFirst.toReversed().flat();
        })
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
