// The JavaScript/TypeScript rules: parse one file with @babel/parser, resolve what each expression refers to
// (constant-folded strings, aliases of globals and modules), and report what reaches a dangerous API. Pure: text in,
// findings out.
import { isBuiltin } from "node:module";
import { parse, type ParserPlugin } from "@babel/parser";
import { allowedByRules, parseHost, type AllowRule } from "../egress-image/src/policy";
import { type Finding, type RuleId, excerptOf, finding } from "./rules";

export interface ScanContext {
    /** The agent's egress allowlist, ports resolved: literal destinations are checked against it. */
    allow: readonly AllowRule[];
}

// Babel's AST, read generically: the walker needs only `type`, `loc` and the child nodes.
type Node = { type: string; loc?: { start: { line: number } } | null; [key: string]: any };

/** What an expression evaluates to, as far as the scanner can tell without running it. */
type Value =
    /** A global or module member, as a dotted path: `eval`, `process.env`, `module:child_process.exec`. */
    | { kind: "ref"; ref: string; built: boolean }
    /** A constant string; `built` when it was assembled (concatenation, join, decoding) rather than written whole. */
    | { kind: "string"; value: string; built: boolean };

const GLOBAL_OBJECT_NAMES = new Set(["globalThis", "global", "window", "self"]);
/** Free identifiers the rules care about; anything else unbound resolves to nothing. */
const KNOWN_GLOBALS = new Set([
    "eval", "Function", "require", "module", "process", "fetch", "XMLHttpRequest", "WebSocket", "EventSource", "navigator",
    "atob", "Buffer", "String", "Object", "JSON", "Reflect", "setTimeout", "setInterval", "setImmediate", "__dirname", "URL",
]);

const DECODERS = new Set(["atob", "Buffer.from", "module:buffer.Buffer.from", "decodeURIComponent", "unescape", "String.fromCharCode"]);
/** Long literals that look encoded: the decoders' inputs worth a finding. */
const ENCODED = /^(?:[A-Za-z0-9+/_-]{64,}={0,2}|(?:[0-9a-fA-F]{2}){32,})$|(?:%[0-9a-fA-F]{2}){16}/;
const ESCAPE_RUN = /\\x[0-9a-fA-F]{2}/g;
const CHAR_CODE_ARGS = 16;

/** Credential stores an agent's host or OpenClaw keeps: a skill has no business naming them. */
const CREDENTIAL_PATH = /(?:^|[/\\])(?:\.openclaw(?:[/\\]|$)|auth-profiles|\.ssh(?:[/\\]|$)|id_(?:rsa|dsa|ecdsa|ed25519)\b|\.aws[/\\]credentials|\.npmrc$|\.netrc$|\.git-credentials|\.docker[/\\]config\.json|\.kube[/\\]config)/;

/** Calls that send traffic, and where their destination is. */
type DestinationKind = "url" | "socket" | "none";
const NETWORK_CALLS = new Map<string, DestinationKind>();
for (const ref of ["fetch", "WebSocket", "EventSource", "navigator.sendBeacon", "module:node-fetch", "module:ws", "module:ws.WebSocket", "module:http2.connect", "module:request", "module:got", "module:axios"]) NETWORK_CALLS.set(ref, "url");
for (const fn of ["fetch", "request", "stream", "pipeline", "connect", "Client", "Pool", "Agent", "WebSocket", "EventSource"]) NETWORK_CALLS.set(`module:undici.${fn}`, "url");
for (const fn of ["get", "post", "put", "patch", "delete", "head", "options", "request", "create", "stream"]) {
    for (const lib of ["axios", "got", "superagent", "request", "node-fetch"]) NETWORK_CALLS.set(`module:${lib}.${fn}`, "url");
}
for (const lib of ["http", "https"]) for (const fn of ["get", "request"]) NETWORK_CALLS.set(`module:${lib}.${fn}`, "url");
for (const fn of ["connect", "createConnection"]) for (const lib of ["net", "tls"]) NETWORK_CALLS.set(`module:${lib}.${fn}`, "socket");
for (const ref of ["XMLHttpRequest", "module:net.Socket", "module:tls.TLSSocket", "module:dgram.createSocket", "module:dgram.Socket"]) NETWORK_CALLS.set(ref, "none");

const FS_MODULES = new Set(["fs", "fs.promises", "fs-extra", "graceful-fs"]);
const FS_DELETE = new Set(["rm", "rmdir", "unlink", "remove", "emptyDir", "emptydir"]);
/** Write-like fs operations and the argument that names what they change. */
const FS_WRITE_TARGET: Record<string, number> = {
    writeFile: 0, appendFile: 0, createWriteStream: 0, mkdir: 0, mkdtemp: 0, truncate: 0, chmod: 0, lchmod: 0, chown: 0, lchown: 0,
    utimes: 0, lutimes: 0, copyFile: 1, cp: 1, rename: 1, link: 1, symlink: 1, outputFile: 0, outputJson: 0, outputJSON: 0,
    writeJson: 0, writeJSON: 0, ensureDir: 0, ensureFile: 0, mkdirs: 0, mkdirp: 0, move: 1, copy: 1, ensureLink: 1, ensureSymlink: 1,
};
/** Operations whose target can point anywhere whatever its own path: a link follows its target. */
const FS_ALWAYS_OUTSIDE = new Set(["symlink", "link", "ensureLink", "ensureSymlink"]);

/** Modules whose import alone is a finding: nothing they offer is safe to let through unreviewed. */
const MODULE_RULES: Record<string, { rule: RuleId; message: string }> = {
    child_process: { rule: "child-process", message: "imports node:child_process" },
    vm: { rule: "exec-vm", message: "imports node:vm" },
    dgram: { rule: "network-dynamic-destination", message: "imports node:dgram (raw UDP, no allowlist applies)" },
};

const MAX_RESOLVE_DEPTH = 24;

/** The parser's options by extension: TypeScript where the file says so, JSX where it may appear. */
function parserPlugins(file: string): ParserPlugin[][] {
    if (/\.d\.[cm]?ts$/.test(file)) return [[["typescript", { dts: true }]]];
    if (/\.[cm]?ts$/.test(file)) return [["typescript"]];
    if (file.endsWith(".tsx")) return [["typescript", "jsx"]];
    return [[], ["jsx"]];
}

function parseFile(file: string, code: string): Node | string {
    let lastError = "";
    for (const plugins of parserPlugins(file)) {
        try {
            return parse(code, {
                sourceType: "unambiguous",
                plugins,
                allowReturnOutsideFunction: true,
                allowImportExportEverywhere: true,
                allowAwaitOutsideFunction: true,
                allowNewTargetOutsideFunction: true,
                allowUndeclaredExports: true,
            } as Parameters<typeof parse>[1]) as unknown as Node;
        } catch (error) {
            lastError = (error as Error).message;
        }
    }
    return lastError;
}

const SKIP_KEYS = new Set(["loc", "start", "end", "extra", "range", "leadingComments", "trailingComments", "innerComments", "comments", "tokens", "errors"]);

function* children(node: Node): Generator<[Node, string]> {
    for (const key of Object.keys(node)) {
        if (SKIP_KEYS.has(key)) continue;
        const value = node[key];
        if (Array.isArray(value)) {
            for (const item of value) if (item && typeof item.type === "string") yield [item, key];
        } else if (value && typeof value.type === "string") {
            yield [value, key];
        }
    }
}

/** Expressions that only change the static type, or group: the scanner looks through them. */
function unwrap(node: Node): Node {
    while (true) {
        if (["TSAsExpression", "TSSatisfiesExpression", "TSNonNullExpression", "TSTypeAssertion", "ParenthesizedExpression", "AwaitExpression", "ChainExpression"].includes(node.type)) {
            node = node.expression ?? node.argument;
        } else if (node.type === "SequenceExpression") {
            node = node.expressions[node.expressions.length - 1];
        } else {
            return node;
        }
    }
}

function normalizeModule(specifier: string): string {
    const bare = specifier.replace(/^node:/, "");
    return /^(fs|dns|timers|stream|readline)\/promises$/.test(bare) ? bare.replace("/", ".") : bare;
}

/** The texts of values that are all constant strings, or undefined. */
function constantStrings(values: readonly (Value | undefined)[] | undefined): string[] | undefined {
    if (!values) return undefined;
    const out: string[] = [];
    for (const value of values) {
        if (value?.kind !== "string") return undefined;
        out.push(value.value);
    }
    return out;
}

const ref = (path: string, built = false): Value => ({ kind: "ref", ref: path, built });
const str = (value: string, built: boolean): Value => ({ kind: "string", value, built });

/** Where a name gets its value: an expression, or a key of one (destructuring), or an import. */
type BindingSource = { expr: Node; keys: string[] } | { module: string; key?: string };

/**
 * Scope-insensitive on purpose: every assignment to a name counts, and the first one that resolves to something
 * the rules know wins. Shadowing can then only add findings, never hide one.
 */
function collectBindings(ast: Node): Map<string, BindingSource[]> {
    const bindings = new Map<string, BindingSource[]>();
    const add = (name: string, source: BindingSource) => {
        const list = bindings.get(name) ?? [];
        list.push(source);
        bindings.set(name, list);
    };
    const bindPattern = (pattern: Node, expr: Node, keys: string[]) => {
        pattern = pattern.type === "AssignmentPattern" ? pattern.left : pattern;
        if (pattern.type === "Identifier") add(pattern.name, { expr, keys });
        else if (pattern.type === "ObjectPattern") {
            for (const property of pattern.properties) {
                if (property.type !== "ObjectProperty") continue;
                const key = property.computed ? undefined : (property.key.name ?? property.key.value);
                if (typeof key === "string") bindPattern(property.value, expr, [...keys, key]);
            }
        }
    };
    const visit = (node: Node) => {
        switch (node.type) {
            case "VariableDeclarator":
                if (node.init) bindPattern(node.id, node.init, []);
                break;
            case "AssignmentExpression":
                if (node.operator === "=") bindPattern(node.left, node.right, []);
                break;
            case "ImportDeclaration":
                if (node.importKind === "type") break;
                for (const spec of node.specifiers) {
                    const module = normalizeModule(node.source.value);
                    if (spec.type === "ImportSpecifier") {
                        const imported = spec.imported.name ?? spec.imported.value;
                        add(spec.local.name, imported === "default" ? { module } : { module, key: imported });
                    } else {
                        add(spec.local.name, { module });
                    }
                }
                break;
            case "TSImportEqualsDeclaration":
                if (node.moduleReference.type === "TSExternalModuleReference") add(node.id.name, { module: normalizeModule(node.moduleReference.expression.value) });
                break;
        }
        for (const [child] of children(node)) visit(child);
    };
    visit(ast);
    return bindings;
}

/** Scans one JavaScript or TypeScript file. A file that does not parse is a finding: what cannot be read is not run. */
export function analyzeSource(file: string, code: string, context: ScanContext): Finding[] {
    const lines = code.split(/\r?\n/);
    const ast = parseFile(file, code);
    if (typeof ast === "string") {
        const line = Number(/\((\d+):\d+\)/.exec(ast)?.[1] ?? 1);
        return [finding("unscannable-file", file, line, excerptOf(lines, line), `does not parse: ${ast}`)];
    }
    const findings: Finding[] = [];
    const bindings = collectBindings(ast);
    const report = (rule: RuleId, node: Node, message: string) => {
        const line = node.loc?.start.line ?? 1;
        findings.push(finding(rule, file, line, excerptOf(lines, line), message));
    };

    /** A reference among the name's values wins over a string: `let e = 1; e = eval` is eval. */
    function resolveBinding(name: string, depth: number): Value | undefined {
        let text: Value | undefined;
        for (const source of bindings.get(name) ?? []) {
            let value: Value | undefined;
            if ("module" in source) value = source.key ? ref(`module:${source.module}.${source.key}`) : ref(`module:${source.module}`);
            else {
                value = resolve(source.expr, depth + 1);
                for (const key of source.keys) value = member(value, key, false);
            }
            if (value?.kind === "ref") return value;
            text ??= value;
        }
        return text;
    }

    function member(base: Value | undefined, key: string, builtKey: boolean): Value | undefined {
        if (!base || base.kind !== "ref") return undefined;
        if (base.ref === "globalThis") return GLOBAL_OBJECT_NAMES.has(key) ? base : ref(key, base.built || builtKey);
        if (key === "require" && (base.ref === "module" || base.ref === "process.mainModule")) return ref("require");
        return ref(`${base.ref}.${key}`, base.built || builtKey);
    }

    // Memoised per node: names refer to names, and without it resolution is exponential in real code. A node met
    // again while it is being resolved (a cycle) resolves to nothing.
    const resolved = new Map<Node, Value | undefined | "pending">();

    /** The constant value or reference of an expression, or undefined when it depends on run time. */
    function resolve(raw: Node | null | undefined, depth = 0): Value | undefined {
        if (!raw || depth > MAX_RESOLVE_DEPTH) return undefined;
        const known = resolved.get(raw);
        if (known === "pending") return undefined;
        if (resolved.has(raw)) return known;
        resolved.set(raw, "pending");
        const value = resolveUncached(raw, depth);
        resolved.set(raw, value);
        return value;
    }

    function resolveUncached(raw: Node, depth: number): Value | undefined {
        const node = unwrap(raw);
        switch (node.type) {
            case "StringLiteral":
                return str(node.value, false);
            case "NumericLiteral":
                return str(String(node.value), false);
            case "TemplateLiteral": {
                let out = node.quasis[0].value.cooked ?? "";
                for (let i = 0; i < node.expressions.length; i++) {
                    const part = resolve(node.expressions[i], depth + 1);
                    if (part?.kind !== "string") return undefined;
                    out += part.value + (node.quasis[i + 1].value.cooked ?? "");
                }
                return str(out, node.expressions.length > 0);
            }
            case "BinaryExpression": {
                if (node.operator !== "+") return undefined;
                const [left, right] = [resolve(node.left, depth + 1), resolve(node.right, depth + 1)];
                return left?.kind === "string" && right?.kind === "string" ? str(left.value + right.value, true) : undefined;
            }
            case "Identifier":
                if (bindings.has(node.name)) return resolveBinding(node.name, depth);
                if (GLOBAL_OBJECT_NAMES.has(node.name)) return ref("globalThis");
                return KNOWN_GLOBALS.has(node.name) ? ref(node.name) : undefined;
            case "MetaProperty":
                return ref(`${node.meta.name}.${node.property.name}`);
            case "MemberExpression":
            case "OptionalMemberExpression": {
                if (isFunctionConstructor(node)) return ref("Function");
                if (!node.computed) return member(resolve(node.object, depth + 1), node.property.name, false);
                const key = resolve(node.property, depth + 1);
                return key?.kind === "string" ? member(resolve(node.object, depth + 1), key.value, key.built) : undefined;
            }
            case "LogicalExpression":
                return resolve(node.left, depth + 1) ?? resolve(node.right, depth + 1);
            case "ConditionalExpression":
                return resolve(node.consequent, depth + 1) ?? resolve(node.alternate, depth + 1);
            case "ImportExpression":
                return moduleOf(node.source, depth);
            case "NewExpression": {
                const callee = resolve(node.callee, depth + 1);
                if (callee?.kind === "ref" && callee.ref === "URL") {
                    const href = resolve(node.arguments[1] ?? node.arguments[0], depth + 1);
                    if (href?.kind === "string") return href;
                }
                return undefined;
            }
            case "CallExpression":
            case "OptionalCallExpression":
                return resolveCall(node, depth);
            default:
                return undefined;
        }
    }

    /**
     * `(function(){}).constructor`, `Object.getPrototypeOf(async () => {}).constructor`, `eval.constructor`: the
     * Function constructor. `this.constructor` and other objects' constructors are not.
     */
    function isFunctionConstructor(member: Node): boolean {
        const key = member.computed ? resolve(member.property) : str(member.property.name, false);
        if (key?.kind !== "string" || key.value !== "constructor") return false;
        const base = unwrap(member.object);
        if (["FunctionExpression", "ArrowFunctionExpression", "ClassExpression"].includes(base.type)) return true;
        if (base.type === "CallExpression") return ["Object.getPrototypeOf", "Reflect.getPrototypeOf"].includes(refOf(base.callee)?.ref ?? "");
        const value = refOf(base);
        return value !== undefined && !value.ref.startsWith("module:");
    }

    function moduleOf(specifier: Node | undefined, depth: number): Value | undefined {
        const value = resolve(specifier, depth + 1);
        return value?.kind === "string" ? ref(`module:${normalizeModule(value.value)}`, value.built) : undefined;
    }

    function resolveCall(node: Node, depth: number): Value | undefined {
        const args: Node[] = node.arguments;
        if (node.callee.type === "Import") return moduleOf(args[0], depth);
        const callee = unwrap(node.callee);
        const target = resolve(callee, depth + 1);
        if (target?.kind === "ref") {
            if (target.ref === "require") return moduleOf(args[0], depth);
            if (target.ref === "module:module.createRequire") return ref("require");
            if (target.ref === "String.fromCharCode") {
                const codes = constantStrings(args.map((a) => resolve(a, depth + 1)));
                return codes?.every((c) => /^\d+$/.test(c)) ? str(String.fromCharCode(...codes.map(Number)), true) : undefined;
            }
            if (target.ref === "atob") {
                const input = resolve(args[0], depth + 1);
                return input?.kind === "string" ? str(Buffer.from(input.value, "base64").toString("latin1"), true) : undefined;
            }
            if (target.ref === "Reflect.get") {
                const key = resolve(args[1], depth + 1);
                return key?.kind === "string" ? member(resolve(args[0], depth + 1), key.value, key.built) : undefined;
            }
        }
        if (callee.type !== "MemberExpression" && callee.type !== "OptionalMemberExpression") return undefined;
        const method = callee.computed ? resolve(callee.property, depth + 1) : str(callee.property.name, false);
        if (method?.kind !== "string") return undefined;
        // `eval.bind(null)` is still eval.
        if (method.value === "bind") return resolve(callee.object, depth + 1);
        if (method.value === "join") {
            const array = constantStrings(callee.object.type === "ArrayExpression" ? callee.object.elements.map((e: Node) => resolve(e, depth + 1)) : reversedSplit(callee.object, depth));
            const separator = args.length === 0 ? str(",", false) : resolve(args[0], depth + 1);
            return array && separator?.kind === "string" ? str(array.join(separator.value), true) : undefined;
        }
        const self = resolve(callee.object, depth + 1);
        if (method.value === "concat" && self?.kind === "string") {
            const rest = constantStrings(args.map((a) => resolve(a, depth + 1)));
            return rest ? str(self.value + rest.join(""), true) : undefined;
        }
        if (method.value === "toString") return decodedBuffer(callee.object, depth);
        return undefined;
    }

    /** `"ssecorp".split("").reverse().join("")`: the elements of the reversed split, or undefined. */
    function reversedSplit(node: Node, depth: number): Value[] | undefined {
        if (node.type !== "CallExpression" || node.callee.type !== "MemberExpression" || node.callee.property.name !== "reverse") return undefined;
        const split = node.callee.object;
        if (split.type !== "CallExpression" || split.callee.type !== "MemberExpression" || split.callee.property.name !== "split") return undefined;
        const text = resolve(split.callee.object, depth + 1);
        const separator = resolve(split.arguments[0], depth + 1);
        if (text?.kind !== "string" || separator?.kind !== "string") return undefined;
        return text.value.split(separator.value).reverse().map((part) => str(part, true));
    }

    /** `Buffer.from(literal, "base64"|"hex").toString()`: the decoded text. */
    function decodedBuffer(node: Node, depth: number): Value | undefined {
        if (node.type !== "CallExpression") return undefined;
        const callee = resolve(node.callee, depth + 1);
        if (callee?.kind !== "ref" || !["Buffer.from", "module:buffer.Buffer.from"].includes(callee.ref)) return undefined;
        const [input, encoding] = [resolve(node.arguments[0], depth + 1), resolve(node.arguments[1], depth + 1)];
        if (input?.kind !== "string" || encoding?.kind !== "string" || !Buffer.isEncoding(encoding.value)) return undefined;
        return str(Buffer.from(input.value, encoding.value as BufferEncoding).toString("latin1"), true);
    }

    const refOf = (node: Node | undefined) => {
        const value = node && resolve(node);
        return value?.kind === "ref" ? value : undefined;
    };

    function checkModule(value: Value | undefined, node: Node, specifier: Node | undefined) {
        if (value?.kind !== "ref") {
            report("exec-dynamic-import", node, `${specifier ? "module specifier is not a constant" : "module specifier missing"}`);
            return;
        }
        const name = value.ref.slice("module:".length);
        if (value.built) report("obfuscation-built-name", node, `module name '${name}' is assembled at run time`);
        const rule = MODULE_RULES[name];
        if (rule) report(rule.rule, node, rule.message);
    }

    /** Whether a write target is a constant path inside the skill's working directory (or its own folder). */
    function insideWorkspace(node: Node | undefined): boolean {
        if (!node) return false;
        const relative = (value: Value | undefined) =>
            value?.kind === "string" && !/^(?:[/\\~]|[A-Za-z]:)/.test(value.value) && !value.value.split(/[/\\]/).includes("..");
        const value = resolve(node);
        if (value) return relative(value);
        const call = unwrap(node);
        if (call.type !== "CallExpression") return false;
        const fn = refOf(call.callee);
        if (!fn || !["module:path.join", "module:path.resolve", "module:path.posix.join"].includes(fn.ref)) return false;
        const [first, ...rest]: Node[] = call.arguments;
        const anchor = refOf(first);
        const anchored = anchor !== undefined && ["__dirname", "import.meta.dirname"].includes(anchor.ref);
        return (anchored || relative(resolve(first))) && rest.every((part) => relative(resolve(part)));
    }

    function checkFs(path: string, node: Node, args: Node[]) {
        const module = path.slice("module:".length, path.lastIndexOf("."));
        if (!FS_MODULES.has(module)) return;
        const operation = path.slice(path.lastIndexOf(".") + 1).replace(/Sync$/, "");
        if (FS_DELETE.has(operation)) return report("fs-delete", node, `${operation} deletes files`);
        if (operation === "open") {
            const flags = args[1] === undefined ? str("r", false) : resolve(args[1]);
            if (flags?.kind === "string" && /^r$|^rs$/.test(flags.value)) return;
        } else if (!(operation in FS_WRITE_TARGET)) return;
        const target = args[FS_WRITE_TARGET[operation] ?? 0];
        if (FS_ALWAYS_OUTSIDE.has(operation) || !insideWorkspace(target)) report("fs-write-outside-workspace", node, `${operation} to a path outside the skill's working directory`);
    }

    /** The host (and port) a destination expression names, when its start is constant. */
    function destinationText(node: Node | undefined): string | undefined {
        if (!node) return undefined;
        const value = resolve(node);
        if (value?.kind === "string") return value.value;
        const inner = unwrap(node);
        // A constant prefix that ends the authority (`https://api.x.com/v1/${id}`) names the host all the same.
        let prefix: string | undefined;
        if (inner.type === "TemplateLiteral") prefix = inner.quasis[0].value.cooked;
        else if (inner.type === "BinaryExpression" && inner.operator === "+") {
            const left = resolve(inner.left);
            prefix = left?.kind === "string" ? left.value : undefined;
        }
        return prefix !== undefined && /^[a-z][a-z0-9+.-]*:\/\/[^/?#]+[/?#]/i.test(prefix) ? prefix : undefined;
    }

    function objectProperty(node: Node | undefined, names: string[]): Node | undefined {
        if (node?.type !== "ObjectExpression") return undefined;
        return node.properties.find((p: Node) => p.type === "ObjectProperty" && !p.computed && names.includes(p.key.name ?? p.key.value))?.value;
    }

    function checkDestination(kind: DestinationKind, api: string, node: Node, args: Node[]) {
        if (kind === "none") return report("network-dynamic-destination", node, `${api}: a socket or request whose destination is set later`);
        let text: string | undefined;
        if (kind === "url") {
            const options = objectProperty(unwrap(args[0] ?? { type: "Missing" }), ["url", "href", "baseURL", "origin"]);
            const hostOption = objectProperty(unwrap(args[0] ?? { type: "Missing" }), ["hostname", "host"]);
            if (options) text = destinationText(options);
            else if (hostOption) {
                const host = destinationText(hostOption);
                const port = resolve(objectProperty(unwrap(args[0]), ["port"]));
                text = host && `https://${host}${port?.kind === "string" ? `:${port.value}` : ""}/`;
            } else text = destinationText(args[0]);
        } else {
            // net.connect(port, host) / net.connect({ host, port }) / net.connect(path): a host defaults to localhost.
            const first = unwrap(args[0] ?? { type: "Missing" });
            const [hostNode, portNode] = first.type === "ObjectExpression" ? [objectProperty(first, ["host"]), objectProperty(first, ["port"])] : [args[1], args[0]];
            const port = resolve(portNode);
            const host = hostNode ? destinationText(hostNode) : "localhost";
            text = host !== undefined && port?.kind === "string" ? `tcp://${host}:${port.value}/` : undefined;
        }
        if (text === undefined) return report("network-dynamic-destination", node, `${api}: destination is not a constant`);
        const verdict = allowlisted(text, context.allow);
        if (verdict !== true) report("network-unlisted-destination", node, `${api}: ${verdict}`);
    }

    const isCallTo = (node: Node) => node.type === "CallExpression" || node.type === "OptionalCallExpression" || node.type === "NewExpression";

    function checkCall(node: Node) {
        let args: Node[] = node.arguments;
        let callee = unwrap(node.callee);
        if (node.callee.type === "Import") return checkModule(moduleOfSafe(args[0]), node, args[0]);
        // fn.call(thisArg, ...args) / fn.apply(thisArg, [args]) call fn.
        if ((callee.type === "MemberExpression" || callee.type === "OptionalMemberExpression") && !callee.computed && ["call", "apply"].includes(callee.property.name) && refOf(callee.object)) {
            args = callee.property.name === "call" ? args.slice(1) : (args[1]?.type === "ArrayExpression" ? args[1].elements : []);
            callee = unwrap(callee.object);
        }
        const target = refOf(callee);
        if (!target) return;
        const api = target.ref.replace(/^module:/, "");
        if (target.ref === "require") return checkModule(moduleOfSafe(args[0]), node, args[0]);
        if (target.ref === "eval") return report("exec-eval", node, "eval runs a string as code");
        if (target.ref === "Function") return report("exec-function-constructor", node, "the Function constructor compiles a string");
        if (["setTimeout", "setInterval", "setImmediate"].includes(target.ref) && resolve(args[0])?.kind === "string") return report("exec-eval", node, `${target.ref} with a string runs it as code`);
        if (["process.binding", "process._linkedBinding", "process.dlopen"].includes(target.ref)) return report("child-process", node, `${target.ref} reaches native bindings`);
        if (target.ref === "module:worker_threads.Worker") {
            const evalOption = objectProperty(unwrap(args[1] ?? { type: "Missing" }), ["eval"]);
            if (evalOption && !(evalOption.type === "BooleanLiteral" && evalOption.value === false)) return report("exec-vm", node, "a Worker started from a string");
        }
        if (target.ref.startsWith("module:")) checkFs(target.ref, node, args);
        const destination = NETWORK_CALLS.get(target.ref);
        if (destination) checkDestination(destination, api, node, args);
        if (DECODERS.has(target.ref)) checkEncodedPayload(target.ref, node, args);
    }

    function moduleOfSafe(specifier: Node | undefined): Value | undefined {
        return specifier ? moduleOf(specifier, 0) : undefined;
    }


    function checkEncodedPayload(decoder: string, node: Node, args: Node[]) {
        if (decoder === "String.fromCharCode") {
            if (args.length >= CHAR_CODE_ARGS || args.some((a) => a.type === "SpreadElement")) report("obfuscation-encoded-payload", node, "text assembled from character codes");
            return;
        }
        if (decoder.endsWith("Buffer.from")) {
            const encoding = resolve(args[1]);
            if (encoding?.kind !== "string" || !["base64", "base64url", "hex"].includes(encoding.value)) return;
        }
        const input = resolve(args[0]);
        if (input?.kind === "string" && ENCODED.test(input.value)) report("obfuscation-encoded-payload", node, `a ${input.value.length}-character encoded literal is decoded`);
    }

    /** Member access with a computed key on something the rules watch. */
    function checkComputedMember(node: Node, parent: Node | undefined) {
        const base = refOf(node.object);
        if (!base) return;
        const key = resolve(node.property);
        if (base.ref === "process.env") {
            if (key?.kind !== "string") report("credential-env-enumeration", node, "process.env read by a computed name");
            return;
        }
        // A Node built-in module itself (or its promises API), not data tables inside it (http.STATUS_CODES[code])
        // nor the skill's own modules, which are scanned in their own right.
        const builtin = /^module:([^.]+)(?:\.promises)?$/.exec(base.ref);
        const watched = base.ref === "globalThis" || base.ref === "process" || base.ref === "require" || (builtin !== null && isBuiltin(builtin[1]));
        if (!watched) return;
        if (key?.kind !== "string") {
            // Indexing a module's export by a variable is how code reaches members the scanner cannot name.
            if (!(parent && parent.type === "AssignmentExpression" && parent.left === node)) report("obfuscation-built-name", node, `${base.ref.replace(/^module:/, "")}[…] with a computed name`);
        } else if (key.built) {
            report("obfuscation-built-name", node, `'${key.value}' is assembled at run time`);
        }
    }

    /** process.env taken whole (enumerated, spread, copied, passed on) rather than read by name. */
    function checkWholeEnv(node: Node, parent: Node | undefined, key: string) {
        if (parent && (parent.type === "MemberExpression" || parent.type === "OptionalMemberExpression") && key === "object") return;
        if (parent?.type === "VariableDeclarator" && key === "init") {
            // An alias is followed where it is used; destructuring named variables reads them by name.
            if (parent.id.type === "Identifier") return;
            if (parent.id.type === "ObjectPattern" && !parent.id.properties.some((p: Node) => p.type === "RestElement")) return;
        }
        if (parent?.type === "AssignmentExpression" && key === "right" && parent.left.type === "Identifier") return;
        report("credential-env-enumeration", node, "process.env is read as a whole");
    }

    const STRING_NODES = new Set(["StringLiteral", "TemplateLiteral", "BinaryExpression"]);

    /** A string expression's constant parts, with a NUL where a part is known only at run time. */
    function textWithHoles(node: Node): string {
        const value = resolve(node);
        if (value?.kind === "string") return value.value;
        const inner = unwrap(node);
        if (inner.type === "BinaryExpression" && inner.operator === "+") return textWithHoles(inner.left) + textWithHoles(inner.right);
        if (inner.type === "TemplateLiteral") return inner.quasis.map((q: Node) => q.value.cooked ?? "").join("\0");
        return "\0";
    }

    function checkString(node: Node, parent: Node | undefined) {
        if (parent && (parent.type === "TemplateLiteral" || (parent.type === "BinaryExpression" && parent.operator === "+"))) return;
        if (node.type === "BinaryExpression" && node.operator !== "+") return;
        const text = textWithHoles(node);
        if (CREDENTIAL_PATH.test(text)) report("credential-path", node, `names a credential store (${CREDENTIAL_PATH.exec(text)![0].replace(/^[/\\]/, "")})`);
        if (node.type === "StringLiteral" && (node.extra?.raw?.match(ESCAPE_RUN)?.length ?? 0) >= 32) report("obfuscation-encoded-payload", node, "a long run of \\x escapes");
    }

    function walk(node: Node, parent: Node | undefined, key: string) {
        if (isCallTo(node)) checkCall(node);
        else if (node.type === "ImportExpression") checkModule(moduleOfSafe(node.source), node, node.source);
        else if (node.type === "ImportDeclaration" && node.importKind !== "type") checkModule(ref(`module:${normalizeModule(node.source.value)}`), node, node.source);
        else if ((node.type === "ExportAllDeclaration" || node.type === "ExportNamedDeclaration") && node.source && node.exportKind !== "type") checkModule(ref(`module:${normalizeModule(node.source.value)}`), node, node.source);
        else if (node.type === "TSImportEqualsDeclaration" && node.moduleReference.type === "TSExternalModuleReference") checkModule(ref(`module:${normalizeModule(node.moduleReference.expression.value)}`), node, node.moduleReference);
        if ((node.type === "MemberExpression" || node.type === "OptionalMemberExpression") && node.computed) checkComputedMember(node, parent);
        if (node.type === "Identifier" || node.type === "MemberExpression" || node.type === "OptionalMemberExpression") {
            if (refOf(node)?.ref === "process.env") checkWholeEnv(node, parent, key);
        }
        if (STRING_NODES.has(node.type)) checkString(node, parent);
        for (const [child, childKey] of children(node)) walk(child, node, childKey);
    }

    walk(ast, undefined, "");
    return dedupe(findings);
}

/** One finding per rule and line: an expression seen through several nodes is one problem. */
function dedupe(findings: Finding[]): Finding[] {
    const seen = new Set<string>();
    return findings.filter((f) => {
        const key = `${f.rule}\0${f.file}\0${f.line}`;
        if (seen.has(key)) return false;
        seen.add(key);
        return true;
    });
}

const DEFAULT_PORTS: Record<string, number> = { "http:": 80, "https:": 443, "ws:": 80, "wss:": 443 };

/** true when the allowlist lets the agent reach this literal destination; otherwise why not. */
export function allowlisted(destination: string, allow: readonly AllowRule[]): true | string {
    let url: URL;
    try {
        url = new URL(destination);
    } catch {
        return `'${destination}' is not an absolute URL`;
    }
    const port = url.port ? Number(url.port) : DEFAULT_PORTS[url.protocol];
    if (port === undefined && url.protocol !== "tcp:") return `${url.protocol} is not a protocol the egress gateway carries`;
    const target = parseHost(url.hostname, port ?? 0);
    if (!target.ok) return `'${url.hostname}' is not a host the egress gateway accepts`;
    const where = `${target.value.kind === "name" ? target.value.host : target.value.address}:${target.value.port}`;
    return allowedByRules(target.value, allow) ? true : `${where} is not in the agent's egress allowlist`;
}
