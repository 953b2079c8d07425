// npm run scan -- <skill dir...> [--json] [--allow host[:ports]]...      scan skills (exit 1 on any finding)
// npm run scan -- quarantine list|show <skill>|override <skill> --ack "I accept the risk" --user <name> [--hash <prefix>]
//                [--stack <name>] [--db <file>]
import { existsSync, statSync } from "node:fs";
import { parseEgressRule } from "../infra/config";
import { ACKNOWLEDGMENT, Quarantine, type SkillRecord, quarantinePath } from "./quarantine";
import { formatFindings } from "./rules";
import { scanSkill } from "./skill";

const HTTPS_PORT = 443;

function usage(message: string): never {
    console.error(
        `error: ${message}\nusage: npm run scan -- <skill dir...> [--json] [--allow host[:ports]]...\n` +
            `       npm run scan -- quarantine list|show <skill>|override <skill> --ack "${ACKNOWLEDGMENT}" --user <name> [--hash <prefix>] [--stack <name>] [--db <file>]`,
    );
    process.exit(2);
}

function describe(record: SkillRecord): string[] {
    const head = `${record.name}  ${record.hash.slice(0, 16)}  ${record.status}  ${record.findings.length} finding(s)  rules v${record.rulesVersion}  last scanned ${record.lastScanned}`;
    const override = record.override ? [`  overridden by ${record.override.user} at ${record.override.at}: "${record.override.acknowledgment}"`] : [];
    return [head, ...override];
}

function parseOptions(args: string[], valued: string[]) {
    const flags = new Map<string, string[]>();
    const positional: string[] = [];
    for (let i = 0; i < args.length; i++) {
        const arg = args[i];
        if (arg === "--json") flags.set("json", ["true"]);
        else if (arg.startsWith("--")) {
            const name = arg.slice(2);
            if (!valued.includes(name)) usage(`unknown option '${arg}'`);
            const value = args[++i] ?? usage(`${arg} needs a value`);
            flags.set(name, [...(flags.get(name) ?? []), value]);
        } else positional.push(arg);
    }
    return { flags, positional, json: flags.has("json") };
}

function scanCommand(args: string[]): number {
    const { flags, positional, json } = parseOptions(args, ["allow"]);
    if (positional.length === 0) usage("give at least one skill directory");
    const allow = (flags.get("allow") ?? []).map((text) => {
        const rule = parseEgressRule(text);
        if (typeof rule === "string") usage(`--allow ${text}: ${rule}`);
        return { host: rule.host, ports: rule.ports ?? [HTTPS_PORT] };
    });
    const results = positional.map((dir) => {
        if (!existsSync(dir) || !statSync(dir).isDirectory()) usage(`${dir} is not a directory`);
        const { name, hash, files, findings } = scanSkill(dir, { allow });
        return { name, dir, hash, files: files.length, findings };
    });
    if (json) console.log(JSON.stringify(results, null, 2));
    else {
        for (const r of results) {
            console.log(`${r.name} (${r.dir}, ${r.files} files, sha256 ${r.hash.slice(0, 16)}): ${r.findings.length === 0 ? "clean" : `${r.findings.length} finding(s)`}`);
            console.log(formatFindings(r.findings).join("\n"));
        }
    }
    return results.some((r) => r.findings.length > 0) ? 1 : 0;
}

async function quarantineCommand(args: string[]): Promise<number> {
    const [action, ...rest] = args;
    const { flags, positional, json } = parseOptions(rest, ["stack", "db", "ack", "user", "hash"]);
    const one = (name: string) => flags.get(name)?.at(-1);
    const stack = one("stack") ?? "dev";
    const quarantine = new Quarantine(one("db") ?? quarantinePath(stack));
    try {
        const print = (records: SkillRecord[], withFindings: boolean) => {
            if (json) return console.log(JSON.stringify(records, null, 2));
            if (records.length === 0) return console.log(`no skills recorded in ${quarantine.file}`);
            for (const record of records) console.log([...describe(record), ...(withFindings ? formatFindings(record.findings, "    ") : [])].join("\n"));
        };
        if (action === "list") {
            print(quarantine.list(), false);
            return 0;
        }
        const [skill] = positional;
        if (!skill) usage(`quarantine ${action ?? ""} needs a skill name`);
        if (action === "show") {
            const versions = quarantine.versions(skill);
            if (versions.length === 0) usage(`no skill '${skill}' in ${quarantine.file}`);
            print(versions, true);
            return 0;
        }
        if (action === "override") {
            const record = await quarantine.override(skill, { acknowledgment: one("ack") ?? "", user: one("user") ?? "", hash: one("hash") });
            if (json) console.log(JSON.stringify(record, null, 2));
            else console.log([`overridden: ${record.name} ${record.hash} (${record.findings.length} finding(s) acknowledged)`, ...describe(record).slice(1)].join("\n"));
            return 0;
        }
        return usage(`unknown quarantine action '${action ?? ""}'`);
    } catch (error) {
        console.error(`error: ${(error as Error).message}`);
        return 1;
    } finally {
        quarantine.close();
    }
}

const argv = process.argv.slice(2);
if (argv[0] === "quarantine") void quarantineCommand(argv.slice(1)).then((code) => (process.exitCode = code));
else process.exitCode = scanCommand(argv);
