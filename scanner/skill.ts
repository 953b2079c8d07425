// A skill as a whole: its files read without following links, each one dispatched to the rules for its kind, and
// the content hash that a quarantine decision binds to. Anything the scanner cannot vouch for is a finding.
import { createHash } from "node:crypto";
import { lstatSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { type ScanContext, analyzeSource } from "./analyze";
import { type Finding, excerptOf, finding } from "./rules";

export interface SkillFile {
    /** Path inside the skill, forward slashes. */
    path: string;
    content: Buffer;
}

export interface SkillScan {
    name: string;
    dir: string;
    /** sha256 of every file's path and content: what an override binds to. */
    hash: string;
    files: SkillFile[];
    findings: Finding[];
}

export const SOURCE_EXTENSIONS = [".js", ".mjs", ".cjs", ".jsx", ".ts", ".mts", ".cts", ".tsx"];
const TEXT_EXTENSIONS = [".md", ".markdown", ".txt"];
/** Data the agent reads but never runs. Anything not listed here or above is refused (deny by default). */
const DATA_EXTENSIONS = [".json", ".yaml", ".yml", ".toml", ".csv", ".tsv", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico", ".lock"];
const MAX_FILE_BYTES = 1024 * 1024;
const MAX_SKILL_BYTES = 4 * 1024 * 1024;
const MAX_SKILL_FILES = 500;
/** Lifecycle scripts npm (and yarn, pnpm) run on install. */
const INSTALL_HOOKS = ["preinstall", "install", "postinstall", "prepare", "preprepare", "postprepare", "prepublish"];

/** A skill's name: its folder's name, which is also where it is delivered (/etc/openclaw/skills/<name>). */
export const SKILL_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Instructions to the model that ask for secrets. */
const SECRET_REQUESTS = [
    /\b(?:ask|prompt|request|tell|get|have)(?:s|ed|ing)?\b[^.\n]{0,40}\b(?:user|human|operator|owner|them)\b[^.\n]{0,60}\b(?:api[ _-]?keys?|access tokens?|tokens?|passwords?|passphrases?|secrets?|credentials?|private keys?|seed phrases?|recovery phrases?|one-time codes?|2fa codes?)\b/i,
    /\b(?:print|reveal|output|display|echo|dump|paste|send|share|upload|post|leak|copy|include)(?:s|es|ed|ing)?\b[^.\n]{0,60}\b(?:api[ _-]?keys?|access tokens?|auth tokens?|passwords?|secrets?|credentials?|private keys?|environment variables|env vars)\b/i,
    /\b(?:cat|read|open|print|load|include)(?:s|ed|ing)?\b[^\n]{0,40}(?:~\/\.openclaw|\.openclaw\/|auth-profiles|\.ssh\/|id_rsa|id_ed25519|\.aws\/credentials|\.env\b|openclaw\.json|\.npmrc|\.netrc)/i,
];
/** Instructions to send data out, or to fetch and run remote code. */
const EXFILTRATION = [
    /\b(?:send|post|upload|forward|transmit|exfiltrate|submit|copy|sync|mirror|leak|report)(?:s|es|ed|ing)?\b[^.\n]{0,60}\b(?:conversations?|chat history|history|memor(?:y|ies)|messages|transcripts?|files?|contents?|environment|env vars|secrets?|keys?|tokens?|credentials?|passwords?|config(?:uration)?|workspace|data)\b[^.\n]{0,60}\b(?:to|into)\b[^.\n]{0,40}(?:https?:\/\/|webhook|pastebin|ngrok|requestbin|\bserver\b|endpoint|e-?mail|@)/i,
    /\b(?:curl|wget)\b[^\n]{0,120}(?:\s-d\b|\s--data(?:-binary|-raw)?\b|\s-F\b|\s--form\b|\s-T\b|\s--upload-file\b|\s--post-(?:data|file)\b)/i,
    /\b(?:curl|wget|iwr|invoke-webrequest)\b[^\n]{0,200}\|\s*(?:sudo\s+)?(?:ba|z|da)?sh\b/i,
    /\bdownload\b[^.\n]{0,60}\b(?:and|then)\b[^.\n]{0,20}\b(?:run|execute|eval)\b/i,
];

/** Every file of a skill folder. Links are refused, not followed: a link can point anywhere on the deploying machine. */
export function readSkillFiles(dir: string): { files: SkillFile[]; problems: Finding[] } {
    const files: SkillFile[] = [];
    const problems: Finding[] = [];
    let total = 0;
    const visit = (relative: string) => {
        for (const entry of readdirSync(path.join(dir, relative), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
            const inside = relative ? `${relative}/${entry.name}` : entry.name;
            const full = path.join(dir, inside);
            const stat = lstatSync(full);
            if (stat.isDirectory()) visit(inside);
            else if (!stat.isFile()) problems.push(finding("unscannable-file", inside, 1, "", stat.isSymbolicLink() ? "a symbolic link (not followed)" : "not a regular file"));
            else if (stat.size > MAX_FILE_BYTES) problems.push(finding("unscannable-file", inside, 1, "", `${stat.size} bytes, over the ${MAX_FILE_BYTES}-byte limit per file`));
            else if (files.length >= MAX_SKILL_FILES || total + stat.size > MAX_SKILL_BYTES) {
                problems.push(finding("unscannable-file", inside, 1, "", `the skill is over ${MAX_SKILL_FILES} files or ${MAX_SKILL_BYTES} bytes`));
            } else {
                total += stat.size;
                files.push({ path: inside, content: readFileSync(full) });
            }
        }
    };
    visit("");
    return { files, problems };
}

/** sha256 over each file's path, length and bytes, in path order: any edit, rename or new file changes it. */
export function skillHash(files: readonly SkillFile[]): string {
    const hash = createHash("sha256");
    for (const file of [...files].sort((a, b) => (a.path < b.path ? -1 : 1))) {
        hash.update(`${file.path}\0${file.content.length}\0`);
        hash.update(file.content);
    }
    return hash.digest("hex");
}

function extensionOf(file: string): string {
    const base = file.slice(file.lastIndexOf("/") + 1);
    const dot = base.lastIndexOf(".");
    return dot > 0 ? base.slice(dot).toLowerCase() : "";
}

function analyzeText(file: string, text: string): Finding[] {
    const lines = text.split(/\r?\n/);
    const findings: Finding[] = [];
    lines.forEach((line, index) => {
        if (SECRET_REQUESTS.some((pattern) => pattern.test(line))) findings.push(finding("skillmd-secret-request", file, index + 1, excerptOf(lines, index + 1), "asks the model for secrets"));
        if (EXFILTRATION.some((pattern) => pattern.test(line))) findings.push(finding("skillmd-exfiltration", file, index + 1, excerptOf(lines, index + 1), "tells the model to send data out or run remote code"));
    });
    return findings;
}

function analyzePackageJson(file: string, text: string): Finding[] {
    let manifest: { scripts?: Record<string, unknown> };
    try {
        manifest = JSON.parse(text);
    } catch (error) {
        return [finding("unscannable-file", file, 1, "", `not JSON: ${(error as Error).message}`)];
    }
    const lines = text.split(/\r?\n/);
    return INSTALL_HOOKS.filter((hook) => manifest?.scripts?.[hook] !== undefined).map((hook) => {
        const line = Math.max(1, lines.findIndex((l) => l.includes(`"${hook}"`)) + 1);
        return finding("install-script", file, line, excerptOf(lines, line), `runs '${hook}' on install`);
    });
}

/** Findings for a skill's files (pure). */
export function scanFiles(files: readonly SkillFile[], context: ScanContext): Finding[] {
    const findings: Finding[] = [];
    for (const file of files) {
        const extension = extensionOf(file.path);
        const base = file.path.slice(file.path.lastIndexOf("/") + 1);
        const text = () => file.content.toString("utf8");
        if (base === "binding.gyp") findings.push(finding("install-script", file.path, 1, "", "a native addon built on install"));
        else if (base === "package.json") findings.push(...analyzePackageJson(file.path, text()));
        else if (SOURCE_EXTENSIONS.includes(extension)) findings.push(...analyzeSource(file.path, text(), context));
        else if (TEXT_EXTENSIONS.includes(extension)) findings.push(...analyzeText(file.path, text()));
        else if (!DATA_EXTENSIONS.includes(extension)) findings.push(finding("unscannable-file", file.path, 1, "", `${extension || "extensionless"} files are not analysed`));
    }
    return findings;
}

/** Reads and scans one skill folder. */
export function scanSkill(dir: string, context: ScanContext): SkillScan {
    const { files, problems } = readSkillFiles(dir);
    return { name: path.basename(path.resolve(dir)), dir, hash: skillHash(files), files, findings: [...problems, ...scanFiles(files, context)] };
}
