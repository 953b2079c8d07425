// The offline review of a Kubernetes stack: the plan (namespace, agents with their ports, workloads with their
// hardening, Services, NetworkPolicies) and every policy verdict, from the resources the program declares under mocks.
import { type StackConfig, enabledProviders } from "../infra/config";
import { agentPort } from "../infra/kubernetesTopology";
import { NETWORK_POLICY, POLICIES, STACK_POLICIES, type Verdict, evaluate, podSpecOf } from "../policy/policies";
import { type RecordedResource, reveal } from "./mockProgram";

/** The policies that speak about Kubernetes resources. */
export const isKubernetesPolicy = (name: string) => name.startsWith("k8s-");

export function kubernetesReview(stack: string, config: StackConfig, resources: readonly RecordedResource[], secretsNotChecked: string[]) {
    const manifests = resources.filter((r) => r.type.startsWith("kubernetes:")).map((r) => ({ type: r.type, name: r.name, props: reveal(r.inputs) as Record<string, any> }));
    const verdicts: Verdict[] = evaluate(manifests);
    const mandatory = verdicts.filter((v) => v.enforcementLevel === "mandatory");
    const kindOf = (type: string) => type.slice(type.lastIndexOf(":") + 1);
    const namespace = manifests.find((m) => kindOf(m.type) === "Namespace")?.props.metadata.name;

    const plan = {
        stack,
        backend: "kubernetes" as const,
        ok: mandatory.length === 0,
        namespace,
        context: config.kubernetes.context ?? "(current kubeconfig context)",
        agents: config.agents.map((a) => ({
            name: a.name,
            image: a.image,
            model: a.model,
            port: agentPort(a),
            runtimeClassName: a.runtime ?? config.kubernetes.runtimeClassName ?? null,
            resources: a.resources,
            budget: a.budget,
            egress: { mode: a.egress.mode, allow: [...a.egress.allow, ...config.egress.allowForAll].map((r) => `${r.host}:${(r.ports ?? config.egress.defaultPorts).join(",")}`) },
            credentialEpoch: a.credentialEpoch,
        })),
        workloads: manifests
            .filter((m) => podSpecOf(m))
            .map((m) => {
                const pod = podSpecOf(m)!;
                const [container] = pod.containers;
                const security = { ...pod.securityContext, ...container.securityContext };
                return {
                    kind: kindOf(m.type),
                    name: m.props.metadata.name,
                    replicas: m.props.spec.replicas,
                    strategy: m.props.spec.strategy?.type ?? m.props.spec.updateStrategy?.type ?? "default",
                    image: container.image,
                    user: `${security.runAsUser}:${security.runAsGroup}`,
                    readOnlyRoot: security.readOnlyRootFilesystem === true,
                    capabilitiesDropped: security.capabilities?.drop ?? [],
                    allowPrivilegeEscalation: security.allowPrivilegeEscalation !== false,
                    seccomp: security.seccompProfile?.type ?? "unset",
                    limits: container.resources?.limits ?? {},
                    runtimeClassName: pod.runtimeClassName ?? null,
                    nameserver: pod.dnsConfig?.nameservers?.[0] ?? (pod.dnsPolicy === "None" ? "none" : "cluster DNS"),
                    volumes: (container.volumeMounts ?? []).map((v: any) => `${v.name}:${v.mountPath}${v.readOnly ? " (ro)" : ""}`),
                };
            }),
        services: manifests
            .filter((m) => kindOf(m.type) === "Service")
            .map((m) => ({ name: m.props.metadata.name, ports: m.props.spec.ports.map((p: any) => `${p.port}/${p.protocol}->${p.targetPort}`) })),
        networkPolicies: manifests.filter((m) => m.type === NETWORK_POLICY).map((m) => ({ name: m.props.metadata.name, policyTypes: m.props.spec.policyTypes, selects: describeSelector(m.props.spec.podSelector) })),
        keyEpochs: Object.fromEntries(enabledProviders(config.keyProxy).map((p) => [p.id, p.keyEpoch])),
        verdicts,
        secretsNotChecked,
    };

    const out: string[] = [`Stack ${stack}: offline review of the Kubernetes backend (Pulumi mocks: no CLI, no cluster)`, "", `Namespace ${namespace} in ${plan.context}`, "", "Agents"];
    for (const a of plan.agents) {
        const budget = Object.entries(a.budget).map(([k, v]) => `${k.replace("Usd", "")} $${v}`).join(", ");
        out.push(`  ${a.name}  ${a.image}  model ${a.model}  credential epoch ${a.credentialEpoch}`);
        out.push(`    port ${a.port} on key-proxy and egress-gateway  runtime class ${a.runtimeClassName ?? "cluster default"}  budget ${budget}`);
        out.push(`    egress (${a.egress.mode}): ${a.egress.allow.join(" ") || "nothing"}`);
    }
    out.push("", "Workloads");
    for (const w of plan.workloads) {
        const hardening = [
            w.readOnlyRoot ? "read-only root" : "WRITABLE ROOT",
            w.capabilitiesDropped.includes("ALL") ? "caps dropped" : "CAPS KEPT",
            w.allowPrivilegeEscalation ? "PRIVILEGE ESCALATION" : "no escalation",
            `seccomp ${w.seccomp}`,
        ].join(", ");
        out.push(`  ${w.kind} ${w.name}  ${w.replicas} replica(s), ${w.strategy}  ${w.image}  user ${w.user}  ${hardening}  limits ${w.limits.memory ?? "NONE"}, ${w.limits.cpu ?? "NONE"}`);
        out.push(`    resolver ${w.nameserver}  runtime class ${w.runtimeClassName ?? "cluster default"}  volumes ${w.volumes.join(", ") || "none"}`);
    }
    out.push("", "Services");
    for (const s of plan.services) out.push(`  ${s.name}  ${s.ports.join(", ")}`);
    out.push("", "NetworkPolicies");
    for (const p of plan.networkPolicies) out.push(`  ${p.name}  ${p.policyTypes.join("+")}  selects ${p.selects}`);
    out.push("", `Upstream key epochs: ${Object.entries(plan.keyEpochs).map(([id, e]) => `${id} ${e}`).join(", ")}`, "", "Policies");
    const failing = new Set(verdicts.map((v) => v.policy));
    for (const policy of [...POLICIES, ...STACK_POLICIES].filter((p) => isKubernetesPolicy(p.name))) {
        if (!failing.has(policy.name)) out.push(`  pass  ${policy.name} (${policy.enforcementLevel})`);
    }
    for (const v of verdicts) out.push(`  ${v.enforcementLevel === "mandatory" ? "FAIL" : "warn"}  ${v.policy} (${v.enforcementLevel})  ${v.resource}: ${v.message}`);
    if (secretsNotChecked.length > 0) out.push("", "Secrets (presence only)", ...secretsNotChecked.map((n) => `  ${n}`));
    out.push("", plan.ok ? `OK: no mandatory violation (${verdicts.length} advisory)` : `FAILED: ${mandatory.length} mandatory violation(s)`);
    return { plan, text: out.join("\n") };
}

function describeSelector(selector: { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: string; values?: string[] }[] } | undefined): string {
    const parts = [
        ...Object.entries(selector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`),
        ...(selector?.matchExpressions ?? []).map((e) => `${e.key} ${e.operator} (${(e.values ?? []).join(",")})`),
    ];
    return parts.length > 0 ? parts.join(", ") : "every pod";
}
