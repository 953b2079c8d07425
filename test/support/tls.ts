import { execFileSync } from "node:child_process";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { tempDir } from "./tempDirs";

export interface TestPki {
    dir: string;
    caFile: string;
    ca: string;
    cert: string;
    key: string;
}

let cached: TestPki | undefined;

const NEW_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
const openssl = (dir: string) => (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
/** ca.pem and ca.key in `dir`, valid for two days. */
const selfSignedCa = (run: ReturnType<typeof openssl>, commonName: string) =>
    run("req", "-x509", ...NEW_EC_KEY, "-days", "2", "-subj", `/CN=${commonName}`, "-keyout", "ca.key", "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");

/** A throwaway CA and a server certificate for localhost / 127.0.0.1, made with openssl once per process (in a tempDir). */
export function testPki(): TestPki {
    if (cached) return cached;
    const dir = tempDir("openclaw-pki");
    const run = openssl(dir);
    selfSignedCa(run, "openclaw test CA");
    run("req", ...NEW_EC_KEY, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr");
    writeFileSync(path.join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,DNS:api.anthropic.com,DNS:api.openai.com,DNS:allowed.example,DNS:generativelanguage.googleapis.com,DNS:llm-compat.example,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "ext.cnf");
    // Containers running as a non-root user read the CA from here.
    chmodSync(dir, 0o755);
    chmodSync(path.join(dir, "ca.pem"), 0o644);
    const read = (file: string) => readFileSync(path.join(dir, file), "utf8");
    cached = { dir, caFile: path.join(dir, "ca.pem"), ca: read("ca.pem"), cert: read("server.pem"), key: read("server.key") };
    return cached;
}

/** Chains (PEM, leaf first) an operator might supply for the Ingress, all of one key, and a key of another pair. */
export interface OperatorPki {
    /** Leaf for 127.0.0.1 and agents.example.net, valid now, then its CA. */
    chain: string;
    /** Leaf for agents.example.net only. */
    hostOnlyChain: string;
    /** Leaf for 127.0.0.1 that expired in 2020. */
    expiredChain: string;
    /** Leaf for 127.0.0.1 valid from 2099 on. */
    futureChain: string;
    /** The CA first, then the leaf. */
    reversedChain: string;
    /** The CA that issued every chain's leaf: what clients trust. */
    ca: string;
    key: string;
    otherKey: string;
}

/**
 * Operator certificates made with `openssl ca` (OpenSSL 3.0 has no `x509 -not_before`; `ca -startdate/-enddate`
 * sets any validity window), in a tempDir.
 */
export function operatorPki(): OperatorPki {
    const dir = tempDir("openclaw-operator-pki");
    const run = openssl(dir);
    const read = (file: string) => readFileSync(path.join(dir, file), "utf8");
    selfSignedCa(run, "operator test CA");
    run("req", ...NEW_EC_KEY, "-subj", "/CN=agents.example.net", "-keyout", "leaf.key", "-out", "leaf.csr");
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other.key");
    writeFileSync(path.join(dir, "ca.cnf"), "[ca]\ndefault_ca=test\n[test]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\ndefault_md=sha256\npolicy=any\nunique_subject=no\n[any]\ncommonName=supplied\n");
    writeFileSync(path.join(dir, "index.txt"), "");
    writeFileSync(path.join(dir, "serial"), "01\n");
    const leaf = (out: string, subjectAltName: string, validity: string[]) => {
        writeFileSync(path.join(dir, `${out}.cnf`), `subjectAltName=${subjectAltName}\nextendedKeyUsage=serverAuth\n`);
        run("ca", "-batch", "-config", "ca.cnf", "-in", "leaf.csr", "-cert", "ca.pem", "-keyfile", "ca.key", "-notext", "-extfile", `${out}.cnf`, ...validity, "-out", out);
        return read(out);
    };
    const now = ["-days", "2"];
    const ca = read("ca.pem");
    return {
        chain: leaf("both.pem", "IP:127.0.0.1,DNS:agents.example.net", now) + ca,
        hostOnlyChain: leaf("host.pem", "DNS:agents.example.net", now) + ca,
        expiredChain: leaf("expired.pem", "IP:127.0.0.1", ["-startdate", "20200101000000Z", "-enddate", "20200102000000Z"]) + ca,
        futureChain: leaf("future.pem", "IP:127.0.0.1", ["-startdate", "20990101000000Z", "-enddate", "20991231000000Z"]) + ca,
        reversedChain: ca + read("both.pem"),
        ca,
        key: read("leaf.key"),
        otherKey: read("other.key"),
    };
}
