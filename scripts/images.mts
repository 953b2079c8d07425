// Bundles the services and builds their images, with no network at build time.
//   npm run images -- bundle                 esbuild bundles only
//   npm run images -- build [--local-base]   bundles, then docker build; --local-base first assembles a
//                                                  Node 24 base image from this machine's Node (no registry needed)
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { build } from "esbuild";

const ROOT = path.resolve(import.meta.dirname, "..");

export const SERVICES = {
    keyProxy: { dir: "proxy-image", entry: "src/main.ts", bundle: "dist/keyproxy.cjs", image: "openclaw-key-proxy:0.1.0" },
    egressGateway: { dir: "egress-image", entry: "src/main.ts", bundle: "dist/egress.cjs", image: "openclaw-egress-gateway:0.1.0" },
    ingress: { dir: "ingress-image", entry: "src/main.ts", bundle: "dist/ingress.cjs", image: "openclaw-ingress:0.1.0" },
} as const;
export type Service = keyof typeof SERVICES;

export const LOCAL_NODE_BASE = "openclaw-node-base:24-local";

export async function bundle(service: Service): Promise<string> {
    const spec = SERVICES[service];
    const outfile = path.join(ROOT, spec.dir, spec.bundle);
    await build({
        entryPoints: [path.join(ROOT, spec.dir, spec.entry)],
        outfile,
        bundle: true,
        platform: "node",
        target: "node24",
        format: "cjs",
        legalComments: "none",
        logLevel: "warning",
    });
    // re2-wasm loads its WebAssembly from beside the script that runs it: beside the bundle.
    if (service === "ingress") copyFileSync(path.join(ROOT, "node_modules/re2-wasm/build/wasm/re2.wasm"), path.join(path.dirname(outfile), "re2.wasm"));
    return outfile;
}

/**
 * A minimal Node 24 base like distroless's: the node binary at /nodejs/bin/node, the glibc libraries it
 * links, passwd/group entries, and nothing else (no shell, no package manager). Built with `docker import`.
 */
export function buildLocalNodeBase(tag = LOCAL_NODE_BASE): string {
    const node = realpathSync(path.join(ROOT, "node_modules", "node", "bin", "node"));
    const version = execFileSync(node, ["--version"], { encoding: "utf8" }).trim();
    if (!version.startsWith("v24.")) throw new Error(`expected Node 24 in node_modules, found ${version}`);
    const rootfs = mkdtempSync(path.join(tmpdir(), "node-base-"));
    try {
        const place = (source: string, target: string) => {
            mkdirSync(path.join(rootfs, path.dirname(target)), { recursive: true });
            copyFileSync(source, path.join(rootfs, target));
        };
        place(node, "/nodejs/bin/node");
        chmodSync(path.join(rootfs, "nodejs/bin/node"), 0o755);
        const libraries = execFileSync("ldd", [node], { encoding: "utf8" })
            .split("\n")
            .map((line) => /(\/\S+) \(0x/.exec(line)?.[1])
            .filter((lib): lib is string => lib !== undefined);
        for (const lib of libraries) place(realpathSync(lib), lib);
        mkdirSync(path.join(rootfs, "etc"), { recursive: true });
        writeFileSync(path.join(rootfs, "etc/passwd"), "root:x:0:0:root:/root:/sbin/nologin\nnode:x:1000:1000:node:/home/node:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n");
        writeFileSync(path.join(rootfs, "etc/group"), "root:x:0:\nnode:x:1000:\nnonroot:x:65532:\n");
        writeFileSync(path.join(rootfs, "etc/nsswitch.conf"), "hosts: files dns\n");
        // No /home/node: an image that needs it owned by uid 1000 creates it with COPY --chown (no shell here).
        for (const dir of ["tmp", "home/nonroot"]) mkdirSync(path.join(rootfs, dir), { recursive: true });
        chmodSync(path.join(rootfs, "tmp"), 0o1777);
        const tar = spawnSync("tar", ["-C", rootfs, "--numeric-owner", "--owner=0", "--group=0", "-c", "."], { maxBuffer: 1 << 30 });
        if (tar.status !== 0) throw new Error(`tar failed: ${tar.stderr}`);
        execFileSync("docker", ["import", "--change", 'ENTRYPOINT ["/nodejs/bin/node"]', "--change", "USER 65532:65532", "-", tag], { input: tar.stdout, stdio: ["pipe", "ignore", "inherit"] });
        return tag;
    } finally {
        rmSync(rootfs, { recursive: true, force: true });
    }
}

export async function buildImage(service: Service, baseImage?: string, tag: string = SERVICES[service].image): Promise<string> {
    await bundle(service);
    const args = ["build", "--network", "none", "--pull=false", "-t", tag];
    if (baseImage) args.push("--build-arg", `BASE_IMAGE=${baseImage}`);
    args.push(path.join(ROOT, SERVICES[service].dir));
    const result = spawnSync("docker", args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, DOCKER_BUILDKIT: "0" } });
    if (result.status !== 0) throw new Error(`docker build of ${tag} failed:\n${result.stdout}\n${result.stderr}`);
    return tag;
}

if (import.meta.main) {
    const [command, ...flags] = process.argv.slice(2);
    if (command === "bundle") {
        for (const service of Object.keys(SERVICES) as Service[]) console.log(`bundled ${path.relative(ROOT, await bundle(service))}`);
    } else if (command === "build") {
        const base = flags.includes("--local-base") ? buildLocalNodeBase() : undefined;
        for (const service of Object.keys(SERVICES) as Service[]) console.log(`built ${await buildImage(service, base)}`);
    } else {
        console.error("usage: npm run images -- bundle | build [--local-base]");
        process.exit(2);
    }
}
