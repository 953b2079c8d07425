import { type IngressConfig, TLS_ENV, ingressConfigSchema } from "../../contracts/ingress";

export { type IngressConfig, TLS_ENV, ingressAgentSchema, ingressConfigSchema, ingressUserSchema } from "../../contracts/ingress";

/** Reads INGRESS_CONFIG, the certificate and key from their variables if it names none (then removed from the environment). */
export function loadIngressConfig(env: NodeJS.ProcessEnv = process.env): IngressConfig {
    const raw = JSON.parse(env.INGRESS_CONFIG ?? "{}") as Record<string, unknown>;
    const fromEnv = { certPem: env[TLS_ENV.certPem], keyPem: env[TLS_ENV.keyPem] };
    delete env[TLS_ENV.keyPem];
    return ingressConfigSchema.parse({ ...raw, tls: raw.tls ?? fromEnv });
}

export const registryDirs = (config: Pick<IngressConfig, "dataDir">) => ({
    agents: `${config.dataDir}/agents`,
    users: `${config.dataDir}/users`,
    audit: `${config.dataDir}/audit`,
});
