// The skill scanner's speed and its false positives on real code.
//   npm run bench:scan -- [package...] default: yaml zod undici from node_modules; writes bench/scan-results.md
// Every JavaScript/TypeScript file of each package is scanned as one skill would be (no egress allowlist, so every
// literal destination counts as unlisted). CPU seconds come from process.cpuUsage (user + system) of this process.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { analyzeSource } from "../scanner/analyze.ts";
import type { Finding } from "../scanner/rules.ts";
import { SOURCE_EXTENSIONS, scanSkill } from "../scanner/skill.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const packages = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["yaml", "zod", "undici"];
const NO_ALLOWLIST = { allow: [] };

function sourceFiles(dir: string, out: string[] = []): string[] {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory() && entry.name !== "node_modules") sourceFiles(full, out);
        else if (entry.isFile() && SOURCE_EXTENSIONS.some((ext) => entry.name.endsWith(ext))) out.push(full);
    }
    return out;
}

const cpuSeconds = (start: NodeJS.CpuUsage) => {
    const used = process.cpuUsage(start);
    return (used.user + used.system) / 1e6;
};

const rows: string[] = [];
const findingsByPackage: { name: string; findings: Finding[] }[] = [];
for (const name of packages) {
    const dir = path.join(ROOT, "node_modules", name);
    const version = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")).version;
    const files = sourceFiles(dir).map((file) => ({ file: path.relative(dir, file), code: readFileSync(file, "utf8") }));
    const bytes = files.reduce((sum, f) => sum + Buffer.byteLength(f.code), 0);
    const cpu = process.cpuUsage();
    const wall = performance.now();
    const findings = files.flatMap((f) => analyzeSource(f.file, f.code, NO_ALLOWLIST));
    const seconds = (performance.now() - wall) / 1000;
    const cpuUsed = cpuSeconds(cpu);
    findingsByPackage.push({ name: `${name}@${version}`, findings });
    rows.push(`| ${name}@${version} | ${files.length} | ${(bytes / 1e6).toFixed(2)} | ${seconds.toFixed(2)} | ${cpuUsed.toFixed(2)} | ${Math.round(files.length / cpuUsed)} | ${(bytes / 1e6 / cpuUsed).toFixed(2)} | ${findings.length} |`);
}

// A typical skill: the corpus's weather skill (SKILL.md and one module), scanned whole (read, hash, rules).
const skill = path.join(ROOT, "test", "fixtures", "skills", "benign", "weather-fetch");
const times: number[] = [];
for (let i = 0; i < 50; i++) {
    const start = performance.now();
    scanSkill(skill, NO_ALLOWLIST);
    times.push(performance.now() - start);
}
times.sort((a, b) => a - b);
const skillBytes = readdirSync(skill).reduce((sum, f) => sum + statSync(path.join(skill, f)).size, 0);

const byRule = (findings: Finding[]) => Object.entries(Object.groupBy(findings, (f) => f.rule)).map(([rule, list]) => `${rule} ${list!.length}`).join(", ") || "none";
const report = [
    "# Skill scanner: speed and findings on real packages",
    "",
    `\`npm run bench:scan -- ${packages.join(" ")}\` on ${new Date().toISOString().slice(0, 10)}, Node ${process.version}, one process on a 2-core shared machine.`,
    "",
    "| package | files | MB | wall s | CPU s | files per CPU s | MB per CPU s | findings |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows,
    "",
    `Typical skill (test/fixtures/skills/benign/weather-fetch, ${skillBytes} bytes, read + hash + scan): median ${times[25].toFixed(2)} ms, max ${times[49].toFixed(2)} ms over 50 runs (the first includes the parser's warm-up).`,
    "",
    "## Findings by rule",
    "",
    ...findingsByPackage.map((p) => `- ${p.name}: ${byRule(p.findings)}`),
    "",
    "## Every finding",
    "",
    ...findingsByPackage.flatMap((p) => p.findings.map((f) => `- ${p.name} \`${f.file}:${f.line}\` ${f.rule}: ${f.message} — \`${f.excerpt.replaceAll("`", "'")}\``)),
    "",
];
writeFileSync(path.join(ROOT, "bench", "scan-results.md"), report.join("\n"));
console.log(report.slice(0, 12).join("\n"));
