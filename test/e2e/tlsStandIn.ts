// Stands in for the tls provider in the end-to-end tests, as materialize.ts does for the Docker provider: each tls
// resource of the mocked graph is issued for real with openssl from its declared inputs, and the mock's placeholder
// outputs (scripts/mockProgram.ts TLS_PLACEHOLDERS) are replaced by the real PEMs wherever later resources use them.
// An input it does not translate is refused, so a declared certificate property is never silently dropped.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { TLS_PLACEHOLDERS } from "../../scripts/mockProgram";
import { UntranslatableInput } from "./materialize";

export type TlsType = keyof typeof TLS_PLACEHOLDERS;
export const isTlsType = (type: string): type is TlsType => type in TLS_PLACEHOLDERS;

const KEY_USAGES: Record<string, string> = { cert_signing: "keyCertSign", crl_signing: "cRLSign", digital_signature: "digitalSignature", key_encipherment: "keyEncipherment" };
const EXTENDED_USAGES: Record<string, string> = { server_auth: "serverAuth", client_auth: "clientAuth" };
const INPUTS: Record<TlsType, Set<string>> = {
    "tls:index/privateKey:PrivateKey": new Set(["algorithm", "ecdsaCurve"]),
    "tls:index/selfSignedCert:SelfSignedCert": new Set(["privateKeyPem", "isCaCertificate", "validityPeriodHours", "allowedUses", "subject", "earlyRenewalHours"]),
    "tls:index/certRequest:CertRequest": new Set(["privateKeyPem", "subject", "ipAddresses", "dnsNames"]),
    "tls:index/locallySignedCert:LocallySignedCert": new Set(["certRequestPem", "caPrivateKeyPem", "caCertPem", "validityPeriodHours", "earlyRenewalHours", "allowedUses"]),
};

function extensions(allowedUses: string[] = [], isCa = false): string[] {
    for (const use of allowedUses) if (!(use in KEY_USAGES) && !(use in EXTENDED_USAGES)) throw new UntranslatableInput(`tls allowedUses '${use}' is not translated`);
    const keyUsage = allowedUses.filter((u) => u in KEY_USAGES).map((u) => KEY_USAGES[u]);
    const extended = allowedUses.filter((u) => u in EXTENDED_USAGES).map((u) => EXTENDED_USAGES[u]);
    return [
        `basicConstraints=critical,CA:${isCa ? "TRUE" : "FALSE"}`,
        ...(keyUsage.length > 0 ? [`keyUsage=critical,${keyUsage.join(",")}`] : []),
        ...(extended.length > 0 ? [`extendedKeyUsage=${extended.join(",")}`] : []),
    ];
}

const subjectOf = (subject: { commonName?: string } | undefined) => {
    for (const key of Object.keys(subject ?? {})) if (key !== "commonName") throw new UntranslatableInput(`tls subject.${key} is not translated`);
    return `/CN=${subject?.commonName ?? ""}`;
};
const days = (hours: number) => String(Math.max(1, Math.ceil(hours / 24)));

/** Issues one tls resource for real; returns its outputs under the placeholders the mock gave them. */
export function issueTls(type: TlsType, name: string, inputs: Record<string, any>): Map<string, string> {
    for (const [key, value] of Object.entries(inputs)) {
        if (value !== undefined && value !== null && !INPUTS[type].has(key)) throw new UntranslatableInput(`${type} ${name}: input '${key}' is not translated`);
    }
    const dir = mkdtempSync(path.join(tmpdir(), "tls-standin-"));
    try {
        const file = (base: string, content?: string) => {
            const at = path.join(dir, base);
            if (content !== undefined) writeFileSync(at, content, { mode: 0o600 });
            return at;
        };
        const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
        const placeholders = TLS_PLACEHOLDERS[type](name) as Record<string, string>;
        const out = new Map<string, string>();
        if (type === "tls:index/privateKey:PrivateKey") {
            if (inputs.algorithm !== "ECDSA" || inputs.ecdsaCurve !== "P256") throw new UntranslatableInput(`${name}: only ECDSA P256 keys are translated`);
            const key = openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256");
            out.set(placeholders.privateKeyPem, key);
            out.set(placeholders.publicKeyPem, execFileSync("openssl", ["pkey", "-pubout"], { input: key, encoding: "utf8" }));
        } else if (type === "tls:index/selfSignedCert:SelfSignedCert") {
            const args = ["req", "-x509", "-new", "-key", file("key.pem", inputs.privateKeyPem), "-subj", subjectOf(inputs.subject), "-days", days(inputs.validityPeriodHours)];
            for (const ext of extensions(inputs.allowedUses, inputs.isCaCertificate === true)) args.push("-addext", ext);
            out.set(placeholders.certPem, openssl(...args));
        } else if (type === "tls:index/certRequest:CertRequest") {
            const names = [...(inputs.ipAddresses ?? []).map((a: string) => `IP:${a}`), ...(inputs.dnsNames ?? []).map((d: string) => `DNS:${d}`)];
            const args = ["req", "-new", "-key", file("key.pem", inputs.privateKeyPem), "-subj", subjectOf(inputs.subject)];
            if (names.length > 0) args.push("-addext", `subjectAltName=${names.join(",")}`);
            out.set(placeholders.certRequestPem, openssl(...args));
        } else {
            file("ext.cnf", `${extensions(inputs.allowedUses).join("\n")}\n`);
            openssl(
                "x509", "-req", "-in", file("csr.pem", inputs.certRequestPem), "-CA", file("ca.pem", inputs.caCertPem), "-CAkey", file("ca-key.pem", inputs.caPrivateKeyPem),
                "-CAcreateserial", "-days", days(inputs.validityPeriodHours), "-copy_extensions", "copy", "-extfile", "ext.cnf", "-out", "cert.pem",
            );
            out.set(placeholders.certPem, readFileSync(path.join(dir, "cert.pem"), "utf8"));
        }
        return out;
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

/** `value` with every placeholder of `issued` replaced by the real PEM (longest placeholder first). */
export function withIssued(value: any, issued: ReadonlyMap<string, string>): any {
    if (typeof value === "string") {
        let text = value;
        for (const placeholder of [...issued.keys()].sort((a, b) => b.length - a.length)) if (text.includes(placeholder)) text = text.split(placeholder).join(issued.get(placeholder)!);
        return text;
    }
    if (Array.isArray(value)) return value.map((v) => withIssued(v, issued));
    if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withIssued(v, issued)]));
    return value;
}
