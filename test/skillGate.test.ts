// The deploy gate: `agents[].skills` is scanned while the program is evaluated; a quarantined skill stops the
// program (and `npm run review`) naming the skill, rule and line; an override for the exact content hash lets it
// through, reported by the policy pack; approved skills reach the agent only through the read-only config volume.
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { OPENCLAW_SKILLS_DIR, configWriterScript, skillsBundle } from "../components/agentSandbox";
import { ConfigError, parseStackConfig } from "../infra/config";
import { evaluate } from "../policy/policies";
import { ACKNOWLEDGMENT, Quarantine } from "../scanner/quarantine";
import { REPO_ROOT, TYPES, byType, devConfig, reveal, runProgram } from "./support/mockStack";

const FIXTURES = path.join(REPO_ROOT, "test", "fixtures", "skills");
const DEV_YAML = readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");

let work: string;
let previousDir: string | undefined;
beforeEach(() => {
    work = mkdtempSync(path.join(tmpdir(), "skill-gate-"));
    previousDir = process.env.OPENCLAW_QUARANTINE_DIR;
    process.env.OPENCLAW_QUARANTINE_DIR = path.join(work, "quarantine");
});
afterEach(() => {
    if (previousDir === undefined) delete process.env.OPENCLAW_QUARANTINE_DIR;
    else process.env.OPENCLAW_QUARANTINE_DIR = previousDir;
    rmSync(work, { recursive: true, force: true });
});

/** A copy of a fixture skill under `name`, so a test can edit it. */
function skill(fixture: string, name: string): string {
    const dir = path.join(work, "skills", name);
    cpSync(path.join(FIXTURES, fixture), dir, { recursive: true });
    return dir;
}

/** The dev stack with skills for bart, as a stack file in its own folder. */
function stackWithSkills(...dirs: string[]): string {
    const dir = path.join(work, "stack");
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, "Pulumi.pr.yaml"), DEV_YAML.replace("      credentialEpoch: 1\n", `      credentialEpoch: 1\n      skills: ${JSON.stringify(dirs)}\n`));
    return dir;
}

function review(configDir: string, ...args: string[]) {
    const result = spawnSync(path.join(REPO_ROOT, "node_modules", ".bin", "tsx"), [path.join(REPO_ROOT, "scripts", "review.mts"), "--stack", "pr", "--config-dir", configDir, ...args], {
        encoding: "utf8",
        timeout: 120_000,
        env: { ...process.env, OPENCLAW_QUARANTINE_DIR: path.join(work, "quarantine") },
    });
    return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

// Each review run loads the whole program under mocks (5-10 s on 2 shared cores); these tests run several.
describe("npm run review with agents[].skills", { timeout: 120_000 }, () => {
    it("refuses a skill with a finding, passes it after an override of that version, and refuses it again once edited", async () => {
        const dir = skill("malicious/eval-alias", "helper");
        const stack = stackWithSkills(dir);

        const refused = review(stack);
        expect(refused.code).toBe(1);
        expect(refused.stderr).toContain("Stack pr: skills refused by the deploy gate");
        expect(refused.stderr).toMatch(/openclaw:agents\[0\]\.skills\[0\]: skill 'helper' \(sha256 [0-9a-f]{16}\) is quarantined: exec-eval at index\.js:3 \(eval runs a string as code\)/);
        expect(refused.stderr).toContain('npm run scan -- quarantine override helper --stack pr --ack "I accept the risk" --user <you>');

        const quarantine = new Quarantine(path.join(work, "quarantine", "pr.sqlite"));
        const overridden = await quarantine.override("helper", { acknowledgment: ACKNOWLEDGMENT, user: "ann" });
        quarantine.close();

        const passed = review(stack);
        expect(passed.code).toBe(0);
        expect(passed.stdout).toContain(`skills (deploy gate): helper@${overridden.hash.slice(0, 16)} overridden`);
        expect(passed.stdout).toMatch(new RegExp(`warn {2}skill-overrides \\(advisory\\) {2}agent-bart-container: quarantined skill helper@${overridden.hash.slice(0, 16)}: overridden by ann at .* \\("I accept the risk"\\) despite exec-eval index\\.js:3`));

        writeFileSync(path.join(dir, "index.js"), `${readFileSync(path.join(dir, "index.js"), "utf8")}// harmless-looking edit\n`);
        const again = review(stack);
        expect(again.code).toBe(1);
        expect(again.stderr).toContain("skill 'helper'");
        expect(again.stderr).not.toContain(overridden.hash.slice(0, 16));
    });

    it("passes clean skills and names them, and prints the refusal as JSON too", () => {
        const clean = review(stackWithSkills(skill("benign/github-raw", "readme-reader")));
        expect(clean.code).toBe(0);
        expect(clean.stdout).toMatch(/skills \(deploy gate\): readme-reader@[0-9a-f]{16} clean/);

        const refused = review(stackWithSkills(skill("malicious/fetch-unlisted", "reporter")), "--json");
        expect(refused.code).toBe(1);
        const [error] = JSON.parse(refused.stdout).errors;
        expect(error).toContain("network-unlisted-destination at index.js:2 (fetch: collector.evil.example:443 is not in the agent's egress allowlist)");
    });
});

describe("the program with approved skills", () => {
    it("delivers them through the config writer, read-only at /etc/openclaw/skills, and points OpenClaw at them", async () => {
        const dir = skill("benign/read-own-files", "lookup");
        const raw = devConfig();
        (raw.agents as Record<string, unknown>[])[0].skills = [dir];
        const resources = await runProgram(raw);
        const containers = byType(resources, TYPES.container);
        const writer = reveal(containers.find((c) => c.inputs.name === "openclaw-dev-agent-bart-config-writer")!.inputs);
        const [configUpload, skillsUpload] = writer.uploads;
        expect(JSON.parse(configUpload.content).skills).toEqual({ load: { extraDirs: [OPENCLAW_SKILLS_DIR] } });
        const bundle = JSON.parse(skillsUpload.content);
        expect(Object.keys(bundle)).toEqual(["lookup"]);
        expect(Buffer.from(bundle.lookup["index.js"], "base64").toString()).toBe(readFileSync(path.join(dir, "index.js"), "utf8"));
        const agent = reveal(containers.find((c) => c.inputs.name === "openclaw-dev-agent-bart")!.inputs);
        expect(agent.volumes).toContainEqual(expect.objectContaining({ containerPath: "/etc/openclaw", readOnly: true }));
        expect(agent.labels).toContainEqual({ label: "openclaw.skills", value: expect.stringMatching(/^lookup@[0-9a-f]{16} clean$/) });
        // No override, nothing for the policy pack to report; lisa declares no skills and gets none.
        expect(evaluate([{ type: TYPES.container, name: "agent-bart", props: agent }]).filter((v) => v.policy === "skill-overrides")).toEqual([]);
        const lisaWriter = reveal(containers.find((c) => c.inputs.name === "openclaw-dev-agent-lisa-config-writer")!.inputs);
        expect(lisaWriter.uploads).toHaveLength(1);
        expect(JSON.parse(lisaWriter.uploads[0].content).skills).toBeUndefined();
    });

    it("declares nothing when a skill is refused", async () => {
        const raw = devConfig();
        (raw.agents as Record<string, unknown>[])[1].skills = [skill("malicious/child-process-concat", "runner")];
        await expect(runProgram(raw)).rejects.toThrow(/openclaw:agents\[1\]\.skills\[0\]: skill 'runner' .* child-process at index\.js:1/);
    });
});

describe("agents[].skills in the stack config", () => {
    const withSkills = (skills: unknown) => {
        const raw = devConfig();
        (raw.agents as Record<string, unknown>[])[0].skills = skills;
        return () => parseStackConfig(raw);
    };
    it.each<[string, () => unknown[], RegExp]>([
        ["a missing folder", () => ["/nonexistent/skill"], /openclaw:agents\[0\]\.skills\[0\]: no skill folder at \/nonexistent\/skill/],
        ["a file, not a folder", () => [path.join(FIXTURES, "malicious.json")], /openclaw:agents\[0\]\.skills\[0\]: .* is not a directory/],
        ["two skills with one name", () => [path.join(FIXTURES, "benign", "csv-parse"), path.join(FIXTURES, "..", "skills", "benign", "csv-parse")], /openclaw:agents\[0\]\.skills\[1\]: skill name 'csv-parse' is already skills\[0\]/],
        ["a folder name that is not a skill name", () => [path.join(work, "My Skill")], /openclaw:agents\[0\]\.skills\[0\]: folder name 'My Skill' is not a skill name/],
        ["not a list", () => "skills/x" as unknown as unknown[], /openclaw:agents\[0\]\.skills: /],
    ])("refuses %s, naming the key", (_name, skills, message) => {
        mkdirSync(path.join(work, "My Skill"));
        const parse = withSkills(skills());
        expect(parse).toThrow(ConfigError);
        expect(parse).toThrow(message);
    });
});

describe("the config writer's script", () => {
    const runWriter = (dir: string) => spawnSync(process.execPath, ["-e", configWriterScript(dir)], { encoding: "utf8" });

    it("unpacks the skills read-only into a fresh folder that replaces the previous one", () => {
        const volume = path.join(work, "volume");
        mkdirSync(path.join(volume, "skills", "retired"), { recursive: true });
        writeFileSync(path.join(volume, ".incoming.json"), "{}");
        const files = [{ path: "SKILL.md", content: Buffer.from("# a") }, { path: "lib/x.js", content: Buffer.from("x") }];
        writeFileSync(path.join(volume, ".incoming-skills.json"), skillsBundle([{ name: "alpha", hash: "h", status: "clean", files, findings: [] }]));
        const result = runWriter(volume);
        expect(result.stderr).toBe("");
        expect(readdirSync(volume).sort()).toEqual(["openclaw.json", "skills"]);
        expect(readdirSync(path.join(volume, "skills"))).toEqual(["alpha"]);
        expect(readFileSync(path.join(volume, "skills", "alpha", "lib", "x.js"), "utf8")).toBe("x");
        expect(statSync(path.join(volume, "skills", "alpha", "SKILL.md")).mode & 0o777).toBe(0o400);
        expect(statSync(path.join(volume, "openclaw.json")).mode & 0o777).toBe(0o400);

        // The next config without skills removes them.
        writeFileSync(path.join(volume, ".incoming.json"), "{}");
        expect(runWriter(volume).status).toBe(0);
        expect(readdirSync(volume)).toEqual(["openclaw.json"]);
    });

    it.each([
        ["a path out of the skill", { alpha: { "../beta/x.js": "eA==" } }],
        ["a path that is the skill's folder itself", { alpha: { ".": "eA==" } }],
        ["a skill name out of the folder", { "../up": { "x.js": "eA==" } }],
    ])("stops on %s", (_name, bundle) => {
        const volume = path.join(work, "volume");
        mkdirSync(volume, { recursive: true });
        writeFileSync(path.join(volume, ".incoming.json"), "{}");
        writeFileSync(path.join(volume, ".incoming-skills.json"), JSON.stringify(bundle));
        const result = runWriter(volume);
        expect(result.status).not.toBe(0);
        expect(result.stderr).toMatch(/bad (path|skill name)/);
        expect(readdirSync(volume)).not.toContain("skills");
        expect(readdirSync(volume)).not.toContain("beta");
    });
});
