// The folder-level import rules, checked on every TypeScript file's real import statements (parsed by Babel, so an
// import in a comment or a string does not count and a type-only or dynamic one does): infra/ is below the
// components and the program; a service image is built on its own and pulls in nothing of the deployment; the
// components see an image only through its contract.
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { parse } from "@babel/parser";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "./support/mockStack";

const IMAGES = ["proxy-image", "egress-image", "ingress-image"];
const DEPLOYMENT = ["infra", "components", "program"];

/** Each folder's forbidden import targets, by top-level folder. */
const FORBIDDEN: Record<string, readonly string[]> = {
    infra: ["components", "program"],
    contracts: [...IMAGES, ...DEPLOYMENT],
    components: IMAGES,
    ...Object.fromEntries(IMAGES.map((image) => [image, DEPLOYMENT])),
};

const SKIPPED_DIRS = new Set(["node_modules", "dist", ".git"]);
const TYPESCRIPT = /\.(ts|mts|cts|tsx)$/;

function typescriptFiles(dir: string): string[] {
    return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
        if (entry.isDirectory()) return SKIPPED_DIRS.has(entry.name) || entry.name.startsWith(".") ? [] : typescriptFiles(path.join(dir, entry.name));
        return TYPESCRIPT.test(entry.name) ? [path.join(dir, entry.name)] : [];
    });
}

type Node = { type: string; [key: string]: unknown };
const isNode = (value: unknown): value is Node => typeof value === "object" && value !== null && typeof (value as Node).type === "string";
const literal = (value: unknown): string | undefined => (isNode(value) && value.type === "StringLiteral" ? (value.value as string) : undefined);

/** The module specifier a node imports, if it is an import: static, re-export, dynamic, `import("x").T` or require. */
function specifierOf(node: Node): string | undefined {
    switch (node.type) {
        case "ImportDeclaration":
        case "ExportAllDeclaration":
        case "ExportNamedDeclaration":
        case "ImportExpression":
        case "TSImportType":
            return literal(node.source);
        case "TSExternalModuleReference":
            return literal(node.expression);
        case "CallExpression": {
            const callee = node.callee as Node;
            return callee.type === "Identifier" && callee.name === "require" ? literal((node.arguments as unknown[])[0]) : undefined;
        }
        default:
            return undefined;
    }
}

/** Every module specifier `source` imports. */
function importsOf(source: string, fileName: string): string[] {
    const ast = parse(source, { sourceType: "module", sourceFilename: fileName, plugins: ["typescript"] });
    const found: string[] = [];
    const visit = (value: unknown): void => {
        if (Array.isArray(value)) return value.forEach(visit);
        if (!isNode(value)) return;
        const specifier = specifierOf(value);
        if (specifier !== undefined) found.push(specifier);
        for (const [key, child] of Object.entries(value)) if (key !== "loc" && key !== "extra" && typeof child === "object") visit(child);
    };
    visit(ast.program);
    return found;
}

const topFolder = (relative: string): string => relative.split(path.sep)[0]!;

/** The forbidden edges of one file (`file` relative to the repository root), each naming the file and the import. */
function forbiddenImports(file: string, specifiers: readonly string[]): string[] {
    const forbidden = FORBIDDEN[topFolder(file)] ?? [];
    return specifiers.flatMap((specifier) => {
        if (!specifier.startsWith(".")) return [];
        const target = path.relative(REPO_ROOT, path.resolve(REPO_ROOT, path.dirname(file), specifier));
        return forbidden.includes(topFolder(target)) ? [`${file} imports '${specifier}' (${topFolder(file)}/ may not import ${topFolder(target)}/)`] : [];
    });
}

describe("import parsing", () => {
    it.each([
        ['import { a } from "../x";', ["../x"]],
        ['import type { A } from "../x";', ["../x"]],
        ['import "../x";', ["../x"]],
        ['export { a } from "../x";', ["../x"]],
        ['export * from "../x";', ["../x"]],
        ['export type { A } from "../x";', ["../x"]],
        ['const m = await import("../x");', ["../x"]],
        ['let t: import("../x").T;', ["../x"]],
        ['import m = require("../x");', ["../x"]],
        ['const m = require("../x");', ["../x"]],
        ['// import { a } from "../x";\nconst s = "import { a } from \'../x\'";', []],
        ['export const a = 1;', []],
    ])("%s", (source, expected) => {
        expect(importsOf(source, "file.ts")).toEqual(expected);
    });
});

describe("folder rules", () => {
    it.each([
        ["infra/config.ts", "../components/ingress", true],
        ["infra/config.ts", "../program/program", true],
        ["infra/config.ts", "../contracts/ingress", false],
        ["components/ingress.ts", "../ingress-image/src/policy", true],
        ["components/kubernetes/services.ts", "../../egress-image/src/config", true],
        ["components/ingress.ts", "../contracts/ingress", false],
        ["components/ingress.ts", "../infra/topology", false],
        ["contracts/ingress.ts", "../ingress-image/src/rules", true],
        ["contracts/ingress.ts", "../infra/config", true],
        ["contracts/ingress.ts", "../runtime/registry", false],
        ...IMAGES.flatMap((image) => DEPLOYMENT.map((folder) => [`${image}/src/main.ts`, `../../${folder}/x`, true] as [string, string, boolean])),
        ["ingress-image/src/config.ts", "../../contracts/ingress", false],
        ["ingress-image/src/config.ts", "./policy", false],
        ["test/contracts.test.ts", "../ingress-image/src/config", false],
        ["components/ingress.ts", "zod", false],
    ])("%s importing %s is forbidden: %s", (file, specifier, isForbidden) => {
        const found = forbiddenImports(file, [specifier]);
        if (isForbidden) expect(found).toEqual([expect.stringContaining(`${file} imports '${specifier}'`)]);
        else expect(found).toEqual([]);
    });

    it("holds for every TypeScript file of the repository", () => {
        const files = typescriptFiles(REPO_ROOT);
        expect(files.length).toBeGreaterThan(100);
        const violations = files.flatMap((file) => {
            const relative = path.relative(REPO_ROOT, file);
            return forbiddenImports(relative, importsOf(readFileSync(file, "utf8"), relative));
        });
        expect(violations).toEqual([]);
    });
});
