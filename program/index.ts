import * as pulumi from "@pulumi/pulumi";
import { ConfigError, parseStackConfig, rawConfigFromPulumi } from "../infra/config";
import { defineStack } from "./program";
import { gateSkills } from "../infra/skills";

function loadConfig() {
    try {
        const file = `Pulumi.${pulumi.getStack()}.yaml`;
        const config = parseStackConfig(rawConfigFromPulumi(pulumi.runtime.allConfig(), file), file);
        // The skill gate runs before any resource is declared: a refused skill stops the whole program.
        return { config, skills: gateSkills(config, pulumi.getStack()) };
    } catch (error) {
        if (error instanceof ConfigError) {
            // A RunError prints the message alone, without a stack trace: the keys are what the operator needs.
            throw new pulumi.RunError(error.message);
        }
        throw error;
    }
}

const { config, skills } = loadConfig();
const outputs = defineStack(config, pulumi.getStack(), skills);

export const agents = outputs.agents;
export const keyProxy = outputs.keyProxy;
export const egressGateway = outputs.egressGateway;
export const ingress = "ingress" in outputs ? outputs.ingress : undefined;
export const monitoring = "monitoring" in outputs ? outputs.monitoring : undefined;
export const namespace = "namespace" in outputs ? outputs.namespace : undefined;
export const metricsToken = "metricsToken" in outputs ? outputs.metricsToken : undefined;
