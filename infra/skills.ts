// The deploy gate for third-party skills: every skill an agent declares is scanned while the program is evaluated,
// recorded in the stack's quarantine, and let through only if it is clean or an admin overrode exactly this version.
// Anything else stops the program before a resource is declared, naming the skill, the rule and the line.
import { ConfigError, type StackConfig, configKeyPath, effectiveAllowRules, resolveSkillDir } from "./config";
import { Quarantine, type OverrideRecord, quarantinePath } from "../scanner/quarantine";
import type { Finding } from "../scanner/rules";
import { type SkillFile, scanSkill } from "../scanner/skill";

/** A skill the gate let through, with what the agent receives and why it may. */
export interface ApprovedSkill {
    name: string;
    hash: string;
    status: "clean" | "overridden";
    files: SkillFile[];
    /** The findings an admin accepted (empty when clean). */
    findings: Finding[];
    override?: OverrideRecord;
}

/** How many findings an error lists per skill before it points to `npm run scan`. */
const FINDINGS_IN_ERROR = 5;

/**
 * Scans every agent's skills and returns the approved ones by agent name. Throws a ConfigError naming each refused
 * skill's key (`openclaw:agents[i].skills[j]`), its findings and the command that overrides it.
 */
export function gateSkills(config: StackConfig, stack: string, quarantineFile = quarantinePath(stack)): Map<string, ApprovedSkill[]> {
    const approved = new Map<string, ApprovedSkill[]>();
    if (config.agents.every((agent) => agent.skills.length === 0)) return approved;
    const problems: string[] = [];
    const quarantine = new Quarantine(quarantineFile);
    try {
        config.agents.forEach((agent, i) => {
            const allow = effectiveAllowRules(agent.egress.allow, config.egress);
            const skills: ApprovedSkill[] = [];
            agent.skills.forEach((dir, j) => {
                const scan = scanSkill(resolveSkillDir(dir), { allow });
                const record = quarantine.record(scan);
                if (record.status === "quarantined") {
                    const shown = scan.findings.slice(0, FINDINGS_IN_ERROR).map((f) => `${f.rule} at ${f.file}:${f.line} (${f.message})`);
                    const more = scan.findings.length > FINDINGS_IN_ERROR ? [`and ${scan.findings.length - FINDINGS_IN_ERROR} more`] : [];
                    problems.push(
                        `${configKeyPath(["agents", i, "skills", j])}: skill '${scan.name}' (sha256 ${scan.hash.slice(0, 16)}) is quarantined: ${[...shown, ...more].join("; ")}. ` +
                            `Review with \`npm run scan -- quarantine show ${scan.name} --stack ${stack}\`; accept with \`npm run scan -- quarantine override ${scan.name} --stack ${stack} --ack "I accept the risk" --user <you>\``,
                    );
                } else {
                    skills.push({ name: scan.name, hash: scan.hash, status: record.status, files: scan.files, findings: scan.findings, override: record.override });
                }
            });
            approved.set(agent.name, skills);
        });
    } finally {
        quarantine.close();
    }
    if (problems.length > 0) throw new ConfigError(problems, undefined, "skills refused by the deploy gate");
    return approved;
}
