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

/** A throwaway CA and a server certificate for localhost / 127.0.0.1, made with openssl once per process (in a tempDir). */
export function testPki(): TestPki {
    if (cached) return cached;
    const dir = tempDir("openclaw-pki");
    const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=openclaw test CA", "-keyout", "ca.key", "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr");
    writeFileSync(path.join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,DNS:api.anthropic.com,DNS:api.openai.com,DNS:allowed.example,DNS:generativelanguage.googleapis.com,DNS:llm-compat.example,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "ext.cnf");
    // Containers running as a non-root user read the CA from here.
    chmodSync(dir, 0o755);
    chmodSync(path.join(dir, "ca.pem"), 0o644);
    const read = (file: string) => readFileSync(path.join(dir, file), "utf8");
    cached = { dir, caFile: path.join(dir, "ca.pem"), ca: read("ca.pem"), cert: read("server.pem"), key: read("server.key") };
    return cached;
}
