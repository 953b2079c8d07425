// Materialises the program's mocked resource graph on a real Docker Engine, through the Engine API, so the
// end-to-end tests can prove what the declared settings do. The Pulumi CLI and the Docker provider cannot run
// here; this stands in for them. It refuses every resource type and every input it does not translate, so a new
// security setting can never be dropped on the way.
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import http from "node:http";
import type { RecordedResource } from "../../scripts/mockProgram";
import { reveal } from "../../scripts/mockProgram";
import { isTlsType, issueTls, withIssued } from "./tlsStandIn";

const API = "/v1.41";
const SOCKET = "/var/run/docker.sock";
const MiB = 1024 * 1024;

export class UntranslatableInput extends Error {}

const CONTAINER_INPUTS = new Set([
    "name", "image", "user", "readOnly", "privileged", "capabilities", "securityOpts", "ipcMode", "restart", "logDriver", "logOpts",
    "memory", "memorySwap", "cpus", "labels", "healthcheck", "networksAdvanced", "envs", "command", "ports", "volumes", "tmpfs",
    "uploads", "dns", "hostname", "stopTimeout", "sysctls", "mustRun", "attach", "runtime", "networkMode",
]);
const NETWORK_INPUTS = new Set(["name", "driver", "internal", "ipamConfigs", "options", "labels"]);
const VOLUME_INPUTS = new Set(["name", "labels"]);
const COMMAND_INPUTS = new Set(["create", "update", "delete", "environment", "triggers", "stdin"]);
const IGNORED_TYPES = new Set(["random:index/randomPassword:RandomPassword", "pulumi:providers:docker"]);

function refuseUnknown(resource: RecordedResource, handled: Set<string>) {
    for (const [key, value] of Object.entries(resource.inputs)) {
        if (value === undefined || value === null) continue;
        if (!handled.has(key)) throw new UntranslatableInput(`${resource.type} ${resource.name}: input '${key}' is not translated to Docker; refusing to drop it`);
    }
}

/** Go-style durations as Docker's API wants them, in nanoseconds: "30s", "500ms", "2m". */
export function durationNs(text: string): number {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text);
    if (!match) throw new UntranslatableInput(`duration '${text}' is not understood`);
    return Math.round(Number(match[1]) * { ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 }[match[2] as "ms"]);
}

const labelMap = (labels: { label: string; value: string }[] | undefined) => Object.fromEntries((labels ?? []).map((l) => [l.label, l.value]));

const IPAM_INPUTS = new Set(["subnet", "gateway", "ipRange"]);

function ipamConfig(resource: RecordedResource, config: Record<string, unknown>) {
    for (const key of Object.keys(config)) if (!IPAM_INPUTS.has(key)) throw new UntranslatableInput(`${resource.name}: ipamConfigs.${key} is not translated to Docker`);
    return { Subnet: config.subnet, Gateway: config.gateway, IPRange: config.ipRange };
}

/** Pure: the Engine API body creating this network. */
export function networkCreateBody(resource: RecordedResource) {
    refuseUnknown(resource, NETWORK_INPUTS);
    const p = reveal(resource.inputs);
    return {
        Name: p.name,
        Driver: p.driver ?? "bridge",
        Internal: p.internal === true,
        CheckDuplicate: true,
        IPAM: p.ipamConfigs ? { Driver: "default", Config: p.ipamConfigs.map((c: any) => ipamConfig(resource, c)) } : undefined,
        Options: p.options ?? {},
        Labels: labelMap(p.labels),
    };
}

/** Pure: the Engine API body creating this container, and the networks to connect it to after the first. */
export function containerCreateBody(resource: RecordedResource, images: Record<string, string>) {
    refuseUnknown(resource, CONTAINER_INPUTS);
    const p = reveal(resource.inputs);
    for (const key of Object.keys(p.capabilities ?? {})) if (!["drops", "adds"].includes(key)) throw new UntranslatableInput(`capabilities.${key}`);
    for (const v of p.volumes ?? []) if (v.hostPath || v.fromContainer) throw new UntranslatableInput(`${resource.name}: only named volumes are translated`);
    const [first, ...more] = p.networksAdvanced ?? [];
    const endpoint = (n: any) => ({ IPAMConfig: n.ipv4Address ? { IPv4Address: n.ipv4Address } : undefined, Aliases: n.aliases });
    const ports: any[] = p.ports ?? [];
    return {
        name: p.name as string,
        extraNetworks: more as { name: string; ipv4Address?: string; aliases?: string[] }[],
        uploads: (p.uploads ?? []) as { file: string; content: string; permissions?: string }[],
        /** A one-shot container: wait for it to exit, and require success. */
        attach: p.attach === true,
        body: {
            Image: images[p.image] ?? p.image,
            User: p.user,
            Env: p.envs ?? [],
            Cmd: p.command,
            Hostname: p.hostname,
            StopTimeout: p.stopTimeout,
            Labels: labelMap(p.labels),
            Healthcheck: p.healthcheck
                ? { Test: p.healthcheck.tests, Interval: durationNs(p.healthcheck.interval), Timeout: durationNs(p.healthcheck.timeout), StartPeriod: durationNs(p.healthcheck.startPeriod), Retries: p.healthcheck.retries }
                : undefined,
            ExposedPorts: Object.fromEntries(ports.map((port) => [`${port.internal}/${port.protocol ?? "tcp"}`, {}])),
            HostConfig: {
                ReadonlyRootfs: p.readOnly === true,
                Privileged: p.privileged === true,
                CapDrop: p.capabilities?.drops ?? [],
                CapAdd: p.capabilities?.adds ?? [],
                SecurityOpt: p.securityOpts ?? [],
                IpcMode: p.ipcMode,
                RestartPolicy: { Name: p.restart ?? "no" },
                LogConfig: { Type: p.logDriver ?? "json-file", Config: p.logOpts ?? {} },
                Memory: p.memory ? p.memory * MiB : 0,
                MemorySwap: p.memorySwap ? p.memorySwap * MiB : 0,
                NanoCpus: p.cpus ? Math.round(Number(p.cpus) * 1e9) : 0,
                PortBindings: Object.fromEntries(ports.map((port) => [`${port.internal}/${port.protocol ?? "tcp"}`, [{ HostIp: port.ip ?? "", HostPort: String(port.external) }]])),
                Mounts: (p.volumes ?? []).map((v: any) => ({ Type: "volume", Source: v.volumeName, Target: v.containerPath, ReadOnly: v.readOnly === true })),
                Tmpfs: p.tmpfs ?? {},
                Dns: p.dns ?? [],
                Sysctls: p.sysctls ?? {},
                NetworkMode: p.networkMode ?? first?.name,
                Runtime: p.runtime,
            },
            NetworkingConfig: first ? { EndpointsConfig: { [first.name]: endpoint(first) } } : undefined,
        },
    };
}

/** A ustar archive of one file, for PUT /containers/{id}/archive. */
export function tarOf(file: string, content: string, mode: number): Buffer {
    const name = file.replace(/^\//, "");
    if (Buffer.byteLength(name) > 100) throw new UntranslatableInput(`upload path ${file} is longer than a tar name`);
    const data = Buffer.from(content);
    const header = Buffer.alloc(512);
    const put = (text: string, offset: number, length: number) => header.write(text, offset, length, "ascii");
    put(name, 0, 100);
    put(`${mode.toString(8).padStart(7, "0")}\0`, 100, 8);
    put("0000000\0", 108, 8);
    put("0000000\0", 116, 8);
    put(`${data.length.toString(8).padStart(11, "0")}\0`, 124, 12);
    put(`${Math.floor(Date.now() / 1000).toString(8).padStart(11, "0")}\0`, 136, 12);
    put("        ", 148, 8);
    put("0", 156, 1);
    put("ustar\0", 257, 6);
    put("00", 263, 2);
    const sum = header.reduce((acc, byte) => acc + byte, 0);
    put(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8);
    const padding = Buffer.alloc((512 - (data.length % 512)) % 512);
    return Buffer.concat([header, data, padding, Buffer.alloc(1024)]);
}

function api(method: string, path: string, body?: unknown, raw?: { data: Buffer; type: string }): Promise<{ status: number; json: any }> {
    return new Promise((resolve, reject) => {
        const payload = raw ? raw.data : body === undefined ? undefined : Buffer.from(JSON.stringify(body));
        const req = http.request({ socketPath: SOCKET, path: `${API}${path}`, method, headers: payload ? { "content-type": raw?.type ?? "application/json", "content-length": payload.length } : {} }, (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c) => chunks.push(c));
            res.on("end", () => {
                const text = Buffer.concat(chunks).toString();
                let json: any = text;
                try {
                    json = text ? JSON.parse(text) : undefined;
                } catch {
                    // plain text
                }
                if (res.statusCode! >= 400) reject(new Error(`${method} ${path}: ${res.statusCode} ${text}`));
                else resolve({ status: res.statusCode!, json });
            });
        });
        req.on("error", reject);
        req.end(payload);
    });
}

interface Applied {
    type: string;
    hash: string;
    id: string;
    inputs: Record<string, any>;
}

/** What a materialisation left behind: like Pulumi's state, per logical resource name. */
export type MaterialState = Map<string, Applied>;

const hashOf = (inputs: unknown) => createHash("sha256").update(JSON.stringify(inputs)).digest("hex");

/** Replaces the mocks' `<name>-id` placeholders in a command with the real Docker ids. */
function withRealIds(text: string, state: MaterialState): string {
    return text.replace(/\b([a-z0-9-]+)-id\b/g, (whole, name: string) => state.get(name)?.id ?? whole);
}

function runCommand(name: string, script: string, inputs: Record<string, any>, state: MaterialState) {
    const result = spawnSync("sh", ["-c", withRealIds(script, state)], {
        input: inputs.stdin ?? "",
        env: { ...process.env, ...(inputs.environment ?? {}) },
        encoding: "utf8",
        timeout: 60_000,
    });
    if (result.status !== 0) throw new Error(`command ${name} failed (${result.status}): ${result.stderr}`);
}

async function remove(name: string, applied: Applied, state: MaterialState) {
    if (applied.type === "docker:index/container:Container") await api("DELETE", `/containers/${applied.id}?force=true&v=false`).catch(() => undefined);
    else if (applied.type === "docker:index/network:Network") await api("DELETE", `/networks/${applied.id}`).catch(() => undefined);
    else if (applied.type === "docker:index/volume:Volume") await api("DELETE", `/volumes/${applied.id}`).catch(() => undefined);
    else if (applied.type === "command:local:Command" && applied.inputs.delete) runCommand(name, applied.inputs.delete, applied.inputs, state);
    state.delete(name);
}

/**
 * Brings the engine to the recorded graph: resources whose inputs did not change are left alone (same
 * container, same start time), changed ones are replaced, and ones no longer declared are removed.
 */
export async function materialize(resources: RecordedResource[], state: MaterialState, images: Record<string, string>): Promise<void> {
    for (const resource of resources) {
        if (!IGNORED_TYPES.has(resource.type) && !isTlsType(resource.type) && !resource.type.startsWith("openclaw:index:") && !["docker:index/container:Container", "docker:index/network:Network", "docker:index/volume:Volume", "command:local:Command"].includes(resource.type)) {
            throw new UntranslatableInput(`resource type ${resource.type} (${resource.name}) is not translated to Docker`);
        }
    }
    const declared = new Set(resources.map((r) => r.name));
    for (const [name, applied] of [...state].reverse()) if (!declared.has(name)) await remove(name, applied, state);

    // The real PEMs of the tls resources issued so far, by the placeholder the mocks gave them.
    const issued = new Map<string, string>();
    for (const applied of state.values()) if (isTlsType(applied.type)) for (const [placeholder, pem] of JSON.parse(applied.id)) issued.set(placeholder, pem);
    for (const declared of resources) {
        if (IGNORED_TYPES.has(declared.type) || declared.type.startsWith("openclaw:index:")) continue;
        const inputs = withIssued(reveal(declared.inputs), issued);
        const resource = { ...declared, inputs };
        const hash = hashOf(inputs);
        const existing = state.get(resource.name);
        if (existing?.hash === hash) continue;
        if (isTlsType(resource.type)) {
            const outputs = issueTls(resource.type, resource.name, inputs);
            for (const [placeholder, pem] of outputs) issued.set(placeholder, pem);
            state.set(resource.name, { type: resource.type, hash, id: JSON.stringify([...outputs]), inputs });
            continue;
        }
        if (resource.type === "command:local:Command") {
            refuseUnknown(resource, COMMAND_INPUTS);
            if (existing && existing.inputs.create === inputs.create && inputs.update) runCommand(resource.name, inputs.update, inputs, state);
            else {
                if (existing) await remove(resource.name, existing, state);
                runCommand(resource.name, inputs.create, inputs, state);
            }
            state.set(resource.name, { type: resource.type, hash, id: "", inputs });
            continue;
        }
        if (existing) await remove(resource.name, existing, state);
        if (resource.type === "docker:index/network:Network") {
            const { json } = await api("POST", "/networks/create", networkCreateBody(resource));
            state.set(resource.name, { type: resource.type, hash, id: json.Id, inputs });
        } else if (resource.type === "docker:index/volume:Volume") {
            refuseUnknown(resource, VOLUME_INPUTS);
            await api("POST", "/volumes/create", { Name: inputs.name, Labels: labelMap(inputs.labels) });
            state.set(resource.name, { type: resource.type, hash, id: inputs.name, inputs });
        } else {
            const spec = containerCreateBody(resource, images);
            const { json } = await api("POST", `/containers/create?name=${encodeURIComponent(spec.name)}`, spec.body);
            for (const network of spec.extraNetworks) {
                await api("POST", `/networks/${network.name}/connect`, { Container: json.Id, EndpointConfig: { IPAMConfig: network.ipv4Address ? { IPv4Address: network.ipv4Address } : undefined, Aliases: network.aliases } });
            }
            for (const upload of spec.uploads) {
                // As the Docker provider does it: the file's base name, copied into its directory.
                const mode = Number.parseInt(upload.permissions ?? "0644", 8);
                const dir = upload.file.slice(0, upload.file.lastIndexOf("/")) || "/";
                const base = upload.file.slice(upload.file.lastIndexOf("/") + 1);
                await api("PUT", `/containers/${json.Id}/archive?path=${encodeURIComponent(dir)}`, undefined, { data: tarOf(base, upload.content, mode), type: "application/x-tar" });
            }
            await api("POST", `/containers/${json.Id}/start`);
            if (spec.attach) {
                const { json: exit } = await api("POST", `/containers/${json.Id}/wait`);
                if (exit.StatusCode !== 0) throw new Error(`container ${spec.name} exited ${exit.StatusCode}`);
            }
            state.set(resource.name, { type: resource.type, hash, id: json.Id, inputs });
        }
    }
}

/** Removes everything labelled with the stack, also after a failed run. */
export function removeStack(stack: string, extraContainers: string[] = []) {
    const ids = (args: string[]) => execFileSync("docker", args, { encoding: "utf8" }).split("\n").filter(Boolean);
    const containers = [...ids(["ps", "-aq", "--filter", `label=openclaw.stack=${stack}`]), ...extraContainers];
    if (containers.length > 0) spawnSync("docker", ["rm", "-f", "-v", ...containers], { stdio: "ignore" });
    const networks = ids(["network", "ls", "-q", "--filter", `label=openclaw.stack=${stack}`]);
    if (networks.length > 0) spawnSync("docker", ["network", "rm", ...networks], { stdio: "ignore" });
    const volumes = ids(["volume", "ls", "-q", "--filter", `name=openclaw-${stack}-`]);
    if (volumes.length > 0) spawnSync("docker", ["volume", "rm", "-f", ...volumes], { stdio: "ignore" });
}
