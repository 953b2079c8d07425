// Reads a stack file (Pulumi.<stack>.yaml) the way the offline tools need it: the `openclaw:` keys, which secrets
// are stored encrypted, and every problem Pulumi would not report (or would report without the file's name).
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseDocument } from "yaml";
import { ConfigError, INGRESS_TLS_KEY, NAMESPACE, SECRET_KEY, configKeyPath, namespaceProblems, providerSecretKeys } from "../infra/config";
import { PROVIDER_KEY_SHAPE } from "../policy/policies";

export const REPO_ROOT = path.resolve(__dirname, "..");

export interface StackFile {
    /** The file, as a user would name it: relative to the working directory when inside it. */
    file: string;
    /** The `openclaw:` keys, namespace removed; encrypted values left out. */
    raw: Record<string, unknown>;
    /** Secret keys stored encrypted (`secure:`): present, but not readable without the stack's passphrase. */
    encrypted: string[];
}

const isEncrypted = (value: unknown) => value !== null && typeof value === "object" && "secure" in value;

/** Reads Pulumi.<stack>.yaml in `dir`. Throws ConfigError naming the file for broken YAML, a namespace nothing reads or a plain-text provider key. */
export function readStackFile(stack: string, dir = REPO_ROOT): StackFile {
    const fullPath = path.join(dir, `Pulumi.${stack}.yaml`);
    const relative = path.relative(process.cwd(), fullPath);
    const file = relative.startsWith("..") || path.isAbsolute(relative) ? fullPath : relative;
    const document = parseDocument(readFileSync(fullPath, "utf8"));
    // The first syntax error only: the ones after it usually follow from it.
    const [syntax] = document.errors;
    if (syntax) throw new ConfigError([`not valid YAML: ${syntax.message.split("\n")[0].replace(/:$/, "")}; fix the syntax there`], file);
    const config: unknown = (document.toJS() as { config?: unknown } | null)?.config ?? {};
    if (config === null || typeof config !== "object" || Array.isArray(config)) throw new ConfigError(["config: must be a map of namespace:key entries"], file);

    const problems = [...namespaceProblems(Object.keys(config)), ...plainTextKeys(config as Record<string, unknown>)];
    if (problems.length > 0) throw new ConfigError(problems, file);
    const raw: Record<string, unknown> = {};
    const encrypted: string[] = [];
    for (const [key, value] of Object.entries(config)) {
        if (!key.startsWith(`${NAMESPACE}:`)) continue;
        const name = key.slice(NAMESPACE.length + 1);
        if (isEncrypted(value)) encrypted.push(name);
        else raw[name] = value;
    }
    return { file, raw, encrypted };
}

/** The Docker host the stack's agents run on, from its stack file (undefined: the local default). */
export function dockerHostOf(stack: string, dir = REPO_ROOT): string | undefined {
    const host = readStackFile(stack, dir).raw.dockerHost;
    return typeof host === "string" ? host : undefined;
}

const PRIVATE_KEY_PEM = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;

/** A problem for every value shaped like a provider key or a PEM private key outside a `secure:` entry (the value itself is never shown). */
function plainTextKeys(config: Record<string, unknown>): string[] {
    const secretKeys = providerSecretKeys();
    const problems: string[] = [];
    const visit = (value: unknown, at: string, key: string) => {
        if (typeof value === "string" && PRIVATE_KEY_PEM.test(value)) {
            problems.push(`${at}: a private key in plain text: remove it from the file, store it with \`npm run pulumi -- config set --secret ${INGRESS_TLS_KEY} < key.pem\`, and replace the key and its certificate (it has been readable here)`);
        } else if (typeof value === "string" && PROVIDER_KEY_SHAPE.test(value)) {
            const store = SECRET_KEY.test(key) ? `store it with \`pulumi config set --secret ${key}\`` : `keep provider keys only in the secrets ${secretKeys.slice(0, -1).join(", ")} and ${secretKeys.at(-1)} (\`pulumi config set --secret ...\`)`;
            problems.push(`${at}: a provider API key in plain text: remove it from the file, ${store}, and rotate the key (it has been readable here)`);
        } else if (Array.isArray(value)) value.forEach((item, i) => visit(item, `${at}[${i}]`, key));
        else if (value !== null && typeof value === "object" && !isEncrypted(value)) for (const [k, v] of Object.entries(value)) visit(v, `${at}.${k}`, key);
    };
    for (const [fullKey, value] of Object.entries(config)) {
        const inNamespace = fullKey.startsWith(`${NAMESPACE}:`);
        const key = inNamespace ? fullKey.slice(NAMESPACE.length + 1) : fullKey;
        visit(value, inNamespace ? configKeyPath([key]) : fullKey, key);
    }
    return problems;
}
