import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import ipaddr from "ipaddr.js";

const KEY_ALGORITHM = { algorithm: "ECDSA", ecdsaCurve: "P256" };

/**
 * A CA of the program's own (`${name}-ca-key`, `${name}-ca`) and a way to issue server certificates from it
 * (`${name}-<purpose>-key`, `-csr`, `-cert`): clients pin or import the CA.
 */
export function ownCa(parent: pulumi.Resource, name: string, commonName: string) {
    const caKey = new tls.PrivateKey(`${name}-ca-key`, KEY_ALGORITHM, { parent });
    const ca = new tls.SelfSignedCert(
        `${name}-ca`,
        {
            privateKeyPem: caKey.privateKeyPem,
            isCaCertificate: true,
            validityPeriodHours: 24 * 365 * 10,
            allowedUses: ["cert_signing", "crl_signing"],
            subject: { commonName },
        },
        { parent },
    );
    /** A server certificate for `address` (an IPv4 address or a DNS name), and for `alsoDnsNames`. */
    const issue = (purpose: string, address: string, alsoDnsNames: string[] = []) => {
        const key = new tls.PrivateKey(`${name}-${purpose}-key`, KEY_ALGORITHM, { parent });
        const isAddress = ipaddr.IPv4.isValidFourPartDecimal(address);
        const dnsNames = [...(isAddress ? [] : [address]), ...alsoDnsNames];
        const csr = new tls.CertRequest(
            `${name}-${purpose}-csr`,
            {
                privateKeyPem: key.privateKeyPem,
                subject: { commonName: address },
                ...(isAddress ? { ipAddresses: [address] } : {}),
                ...(dnsNames.length > 0 ? { dnsNames } : {}),
            },
            { parent },
        );
        const cert = new tls.LocallySignedCert(
            `${name}-${purpose}-cert`,
            {
                certRequestPem: csr.certRequestPem,
                caPrivateKeyPem: caKey.privateKeyPem,
                caCertPem: ca.certPem,
                validityPeriodHours: 24 * 365,
                // `pulumi up` in the last 30 days issues a new one (the containers serving it restart with it).
                earlyRenewalHours: 24 * 30,
                allowedUses: ["digital_signature", "key_encipherment", "server_auth"],
            },
            { parent },
        );
        return { certPem: cert.certPem, keyPem: pulumi.secret(key.privateKeyPem) };
    };
    return { caCertPem: ca.certPem, issue };
}
