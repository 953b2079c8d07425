// What a newcomer reads: the README and docs/ name only commands that work as written (npm scripts), link only
// documents inside the repository, define every invariant the code cites, and explain what `npm ci` prints.
import { execFileSync } from "node:child_process";
import { lstatSync, readFileSync } from "node:fs";
import path from "node:path";
import { satisfies } from "semver";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "./support/mockStack";

/** Tracked text files; symbolic links (the skill scanner's fixtures have a dangling one) are not read. */
const tracked = execFileSync("git", ["ls-files"], { cwd: REPO_ROOT, encoding: "utf8" })
    .split("\n")
    .filter((f) => f && !f.endsWith("package-lock.json") && !f.endsWith(".svg") && !lstatSync(path.join(REPO_ROOT, f)).isSymbolicLink());
const read = (file: string) => readFileSync(path.join(REPO_ROOT, file), "utf8");
const docs = tracked.filter((f) => f.endsWith(".md"));
const pkg = JSON.parse(read("package.json")) as { scripts: Record<string, string> };

describe("documented commands", () => {
    /** Every command in the docs' code spans and blocks (a line each). */
    const commands = docs.flatMap((file) =>
        [...read(file).matchAll(/```(?:sh|bash)?\n([\s\S]*?)```|`([^`\n]+)`/g)].flatMap((m) => (m[1] ?? m[2]).split("\n").map((line) => ({ file, line: line.replace(/\s+#.*$/, "").trim() }))),
    );

    it("are npm scripts: no node, npx or tsx command, which would run on the system Node", () => {
        expect(commands.filter((c) => /^(node|npx|tsx) /.test(c.line))).toEqual([]);
    });

    it("name npm scripts that exist", () => {
        const runs = commands.flatMap((c) => [...c.line.matchAll(/npm run (?:--silent )?([\w:-]+)/g)].map((m) => ({ ...c, script: m[1] })));
        expect(runs.length).toBeGreaterThan(10);
        expect(runs.filter((r) => !(r.script in pkg.scripts))).toEqual([]);
    });
});

describe("the architecture document", () => {
    const architecture = read("docs/architecture.md");
    const outside = ["../shared", "ARCHITECTURE.md"];

    it("is in the repository, and nothing links the outside copy", () => {
        expect(read("README.md")).toContain("[docs/architecture.md](docs/architecture.md)");
        const links = tracked.filter((file) => file !== "test/docs.test.ts" && outside.some((s) => read(file).includes(s)));
        expect(links).toEqual([]);
    });

    it("defines every invariant the code, tests and docs cite by number", () => {
        const defined = new Set([...architecture.matchAll(/^(\d+)\. /gm)].map((m) => Number(m[1])));
        const cited = new Set(tracked.flatMap((file) => [...read(file).matchAll(/invariant (\d+)/gi)].map((m) => Number(m[1]))));
        expect(cited.size).toBeGreaterThan(3);
        expect([...cited].filter((n) => !defined.has(n))).toEqual([]);
    });
});

describe("npm ci on Node 20", () => {
    it("README explains each engine warning it prints", () => {
        const lock = JSON.parse(read("package-lock.json")) as { packages: Record<string, { name?: string; engines?: { node?: string } }> };
        const warned = Object.entries(lock.packages)
            .filter(([, p]) => p.engines?.node && !satisfies("20.19.0", p.engines.node))
            .map(([key, p]) => (key === "" ? p.name! : key.replace(/^.*node_modules\//, "")));
        expect(warned.length).toBeGreaterThan(0);
        const readme = read("README.md");
        expect(readme).toContain("EBADENGINE");
        expect(readme).toContain(`On Node 20 it prints ${["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen"][warned.length]} \`npm warn EBADENGINE`);
        for (const name of warned) expect(readme).toContain(`\`${name}\``);
    });
});
