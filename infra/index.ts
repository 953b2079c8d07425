import * as pulumi from "@pulumi/pulumi";
import { ConfigError, parseStackConfig, rawConfigFromPulumi } from "./config";
import { defineStack } from "./program";

function loadConfig() {
    try {
        const file = `Pulumi.${pulumi.getStack()}.yaml`;
        return parseStackConfig(rawConfigFromPulumi(pulumi.runtime.allConfig(), file), file);
    } catch (error) {
        if (error instanceof ConfigError) {
            // A RunError prints the message alone, without a stack trace: the keys are what the operator needs.
            throw new pulumi.RunError(error.message);
        }
        throw error;
    }
}

const outputs = defineStack(loadConfig(), pulumi.getStack());

export const agents = outputs.agents;
export const keyProxy = outputs.keyProxy;
export const egressGateway = outputs.egressGateway;
export const monitoring = "monitoring" in outputs ? outputs.monitoring : undefined;
export const namespace = "namespace" in outputs ? outputs.namespace : undefined;
export const metricsToken = "metricsToken" in outputs ? outputs.metricsToken : undefined;
